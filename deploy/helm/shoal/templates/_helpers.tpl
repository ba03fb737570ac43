{{/* Names and labels. */}}

{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "shoal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shoal.labels" -}}
helm.sh/chart: {{ include "shoal.chart" . }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "shoal.serviceAccountName" -}}
{{- default (include "shoal.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "shoal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "shoal.clusterKeySecret" -}}
{{- default (printf "%s-cluster-key" (include "shoal.fullname" .)) .Values.clusterKey.existingSecret }}
{{- end }}

{{/* The headless Service's DNS name, which resolves to every node's IP. */}}
{{- define "shoal.joinAddress" -}}
{{- printf "%s.%s.svc.%s:%d" (include "shoal.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.ports.gossip) }}
{{- end }}

{{/* The mirror as containerd calls it; the daemon listens on its host:port. */}}
{{- define "shoal.mirrorAddr" -}}
{{- printf "127.0.0.1:%d" (int .Values.ports.mirror) }}
{{- end }}

{{/*
shoal.paths renders the node's containerd paths as YAML: the preset's, each
overridden by a non-empty value under .Values.containerd. Use it as
  $paths := include "shoal.paths" . | fromYaml
*/}}
{{- define "shoal.paths" -}}
{{- if not (hasKey .Values.presets .Values.preset) }}
{{- fail (printf "preset %q is not one of: %s" .Values.preset (keys .Values.presets | sortAlpha | join ", ")) }}
{{- end }}
{{- $p := get .Values.presets .Values.preset }}
{{- $c := .Values.containerd }}
socket: {{ default $p.socket $c.socket | required "containerd.socket is required" | quote }}
socketDir: {{ dir (default $p.socket $c.socket) | quote }}
contentDir: {{ if $c.directReads }}{{ default $p.contentDir $c.contentDir | quote }}{{ else }}""{{ end }}
hostsDir: {{ default $p.hostsDir $c.hostsDir | required "containerd.hostsDir is required" | quote }}
config: {{ default $p.config $c.config | default "" | quote }}
configDir: {{ if (default $p.config $c.config) }}{{ dir (default $p.config $c.config) | quote }}{{ else }}""{{ end }}
{{- end }}

{{/*
The container securityContext of every shoal container: root for the
containerd socket and the host's directories (all owned by root), nothing
else. Root's file access to root-owned files needs no capability, so all
are dropped, and the image's filesystem stays read-only.
*/}}
{{- define "shoal.securityContext" -}}
runAsUser: 0
runAsGroup: 0
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}
