// Package deploy holds no code: its tests check the deployment files beside it (docker-compose, systemd,
// Kubernetes, the Grafana dashboard and the alerting rules) against the real gateway binary, a real
// VictoriaMetrics, vmagent, promtool and systemd-analyze.
package deploy
