// Package deploy holds canaryd's deployment files and the tests that keep
// them true; it has no Go code of its own.
//
//   - Dockerfile: a static canaryd binary (no cgo, -trimpath) on
//     distroless/static, run as a non-root user;
//   - kubernetes/: a StatefulSet with a volume per pod for --state-dir,
//     probes, resources and a restricted security context, its Services, a
//     PodDisruptionBudget, a NetworkPolicy, ConfigMaps of settings, rollout
//     specs and the model table, and a kustomization;
//   - systemd/: a hardened unit and its environment file;
//   - rollouts/ and models.yaml: example rollout specs and model table;
//   - grafana/: a dashboard and its provisioning files (its queries are
//     tested on a real Prometheus in internal/daemon: TestGrafanaDashboard);
//   - router/: an example routes file of `canaryd route`, the RBAC of its
//     Kubernetes routes and a Deployment (TestRouterManifests validates
//     them and runs canaryd validate --routes on the routes file);
//   - argo/, flagger/, spinnaker/ and controllers.md: canaryd as the judge
//     of Argo Rollouts, Flagger and Spinnaker (mode: judge), which the
//     modules integrations/argo and integrations/flagger parse with the
//     controllers' own types and run with their own client code.
//
// deploy_test.go validates the Kubernetes manifests against the Kubernetes
// schemas (kubernetes-validate, strict, Kubernetes 1.33; it needs
// CANARYD_PYTHON, which `make test` sets from scripts/pydeps.sh), checks
// that every CANARYD_ variable named here is one that `canaryd run`
// reads, that the image's final stage is static and non-root, that the
// systemd unit passes `systemd-analyze verify`, and that the ConfigMaps'
// copies of rollouts/ and models.yaml match them. grafana_test.go checks
// the dashboard's shape (ids, grid, data source, the rollout variable) and
// its provisioning files; spinnaker_test.go runs spinnaker/pipeline.json's
// webhook stages against a canaryd built from this tree. README.md
// describes each file.
package deploy
