{{/*
Names, labels and generated credentials shared by every template.
One release serves one namespace: the release's own.
*/}}

{{- define "wasp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wasp.fullname" -}}
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

{{- define "wasp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "wasp.commonLabels" -}}
helm.sh/chart: {{ include "wasp.chart" . }}
app.kubernetes.io/part-of: wasp
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of objects that belong to no one component. */}}
{{- define "wasp.labels" -}}
{{ include "wasp.commonLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component ("operator", "master"): stable across upgrades. */}}
{{- define "wasp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wasp.name" .root }}-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "wasp.componentLabels" -}}
{{ include "wasp.commonLabels" .root }}
{{ include "wasp.selectorLabels" . }}
{{- end }}

{{- define "wasp.operator.fullname" -}}
{{- printf "%s-operator" (include "wasp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Cluster-scoped names must not clash between releases of other namespaces. */}}
{{- define "wasp.operator.clusterRole" -}}
{{- printf "%s:%s:operator" .Release.Namespace (include "wasp.fullname" .) }}
{{- end }}

{{- define "wasp.master.fullname" -}}
{{- printf "%s-master" (include "wasp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wasp.worker.serviceAccount" -}}
{{- printf "%s-worker" (include "wasp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wasp.webhook.fullname" -}}
{{- printf "%s-webhook" (include "wasp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Secret with the master token, the worker tokens and the API keys. */}}
{{- define "wasp.secretName" -}}
{{- printf "%s-credentials" (include "wasp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the webhooks' signing secrets (the master writes it, workers read it). */}}
{{- define "wasp.webhookSecretName" -}}
{{- printf "%s-webhook-secrets" (include "wasp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the master's keys file: the chart's, or apiKeys.existingSecret. */}}
{{- define "wasp.apiKeysSecretName" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "wasp.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{/* The shared ConfigMap (accounts.json, roles.json, groups.json). */}}
{{- define "wasp.configMapName" -}}
{{- printf "%s-config" (include "wasp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the apiserver reaches the webhook: the Service's cluster DNS name. */}}
{{- define "wasp.webhook.host" -}}
{{- printf "%s.%s.svc" (include "wasp.webhook.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The (Validating|Mutating)WebhookConfiguration kopf keeps up to date: one per release. */}}
{{- define "wasp.webhook.configuration" -}}
{{- printf "%s.%s.wasp.dev" .Release.Namespace (include "wasp.fullname" .) }}
{{- end }}

{{- define "wasp.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "wasp.masterInternalURL" -}}
{{- printf "http://%s.%s.svc:%d" (include "wasp.master.fullname" .) .Release.Namespace (int .Values.master.port) }}
{{- end }}

{{/* The restricted container securityContext of every wasp container. */}}
{{- define "wasp.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "wasp.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Render `template` once per release rendering and reuse the result: generated
secrets must be the same in the object and in the checksum annotations that
restart pods when they change. Kept in a scratch map on .Values (not a value).
*/}}
{{- define "wasp.memo" -}}
{{- $root := .root -}}
{{- if not (hasKey $root.Values "__memo") -}}
{{- $_ := set $root.Values "__memo" dict -}}
{{- end -}}
{{- $memo := index $root.Values "__memo" -}}
{{- if not (hasKey $memo .key) -}}
{{- $_ := set $memo .key (include .template $root) -}}
{{- end -}}
{{- index $memo .key -}}
{{- end }}

{{/*
Credentials, generated once: an existing Secret's values win (so `helm upgrade`
never rotates them), then the values file, then fresh random ones.
Returns a dict {"master-token": ..., "worker-tokens": ..., "api-keys": ...} as YAML.
*/}}
{{- define "wasp.credentials" -}}
{{- include "wasp.memo" (dict "root" . "key" "credentials" "template" "wasp.credentials.make") }}
{{- end }}

{{- define "wasp.credentials.make" -}}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "wasp.secretName" .)) | default dict -}}
{{- $data := $existing.data | default dict -}}
{{- $token := .Values.credentials.masterToken -}}
{{- if not $token -}}
{{- $token = (index $data "master-token" | default "" | b64dec) | default (randAlphaNum 48) -}}
{{- end -}}
{{- $workerTokens := join "," .Values.credentials.workerTokens -}}
{{- if not $workerTokens -}}
{{- $workerTokens = (index $data "worker-tokens" | default "" | b64dec) | default (randAlphaNum 48) -}}
{{- end -}}
{{- $keys := join "," .Values.credentials.apiKeys -}}
{{- if and (not $keys) .Values.credentials.generateApiKey -}}
{{- $keys = (index $data "api-keys" | default "" | b64dec) | default (randAlphaNum 40) -}}
{{- end -}}
master-token: {{ $token | quote }}
worker-tokens: {{ $workerTokens | quote }}
api-keys: {{ $keys | quote }}
{{- end }}

{{/*
The webhook's CA and serving certificate, generated once and kept on upgrade.
Returns {"ca.crt", "tls.crt", "tls.key"} as YAML (PEM, not base64).
*/}}
{{- define "wasp.webhook.certificate" -}}
{{- include "wasp.memo" (dict "root" . "key" "webhookCertificate" "template" "wasp.webhook.certificate.make") }}
{{- end }}

{{- define "wasp.webhook.certificate.make" -}}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "wasp.webhook.fullname" .)) | default dict -}}
{{- $data := $existing.data | default dict -}}
{{- if and (index $data "tls.crt") (index $data "tls.key") (index $data "ca.crt") -}}
ca.crt: {{ index $data "ca.crt" | b64dec | quote }}
tls.crt: {{ index $data "tls.crt" | b64dec | quote }}
tls.key: {{ index $data "tls.key" | b64dec | quote }}
{{- else -}}
{{- $svc := include "wasp.webhook.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $days := int .Values.operator.webhook.certificateDays -}}
{{- $ca := genCA (printf "%s-webhook-ca" (include "wasp.fullname" .)) $days -}}
{{- $cert := genSignedCert (include "wasp.webhook.host" .) nil $names $days $ca -}}
ca.crt: {{ $ca.Cert | quote }}
tls.crt: {{ $cert.Cert | quote }}
tls.key: {{ $cert.Key | quote }}
{{- end -}}
{{- end }}
