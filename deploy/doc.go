// Package deploy holds productstream's deployment files: the image's
// Dockerfile, the example configuration docker-compose.yml runs, and the
// Kubernetes manifests under kubernetes/ (a kustomize base and an example
// overlay). It has no code; its tests render and decode those files and
// hold them to the configuration and the operations listener they serve.
package deploy
