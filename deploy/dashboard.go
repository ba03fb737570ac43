package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// DashboardFile is the Grafana dashboard, relative to the deploy directory.
const DashboardFile = "grafana/shoal.json"

// MetricRef is a metric a dashboard query reads, with the labels a query
// groups it by.
type MetricRef struct {
	Name   string
	Labels []string
}

var (
	metricName = regexp.MustCompile(`\b((?:shoal|process|go)_[a-z0-9_]+)\b`)
	groupBy    = regexp.MustCompile(`by \(([a-z_, ]+)\) \((?:rate|increase)?\(?([a-z0-9_]+)[{\[]`)
)

// DashboardMetrics lists the metrics the dashboard's queries read, by
// name, so that a test can check them against what running daemons
// export.
func DashboardMetrics(deployDir string) ([]MetricRef, error) {
	path := filepath.Join(deployDir, DashboardFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	byName := map[string]*MetricRef{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllStringSubmatch(tg.Expr, -1) {
				if byName[m[1]] == nil {
					byName[m[1]] = &MetricRef{Name: m[1]}
				}
			}
			for _, m := range groupBy.FindAllStringSubmatch(tg.Expr, -1) {
				r := byName[m[2]]
				for _, l := range strings.Split(m[1], ",") {
					if l = strings.TrimSpace(l); !slices.Contains(r.Labels, l) {
						r.Labels = append(r.Labels, l)
					}
				}
			}
		}
	}
	refs := make([]MetricRef, 0, len(byName))
	for _, r := range byName {
		refs = append(refs, *r)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Name < refs[j].Name })
	return refs, nil
}
