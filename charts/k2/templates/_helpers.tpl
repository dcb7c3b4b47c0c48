{{/*
Names. With the release called "k2" (what `make kind-up` and skaffold install) the services are
k2-kafka, k2-schema-registry, k2-minio and k2-iceberg-rest: the endpoints examples/pipeline.yaml
names.
*/}}
{{- define "k2.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "k2.fullname" -}}
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

{{/* "<fullname>-<component>", for a component's objects. Call with (list . "kafka"). */}}
{{- define "k2.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "k2.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "k2.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. Call with (list . "component"). */}}
{{- define "k2.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "k2.chart" $root }}
{{ include "k2.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: k2
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels (immutable in Deployments/StatefulSets). Call with (list . "component"). */}}
{{- define "k2.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "k2.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Image reference. Call with (list . .Values.<component>.image). K2's own images (no "/" in the
repository) get .Values.images.registry as prefix; the tag defaults to the chart's appVersion; a
digest ("sha256:...") wins over the tag.
*/}}
{{- define "k2.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 }}
{{- $repo := $image.repository }}
{{- if and $root.Values.images.registry (not (contains "/" $repo)) }}
{{- $repo = printf "%s/%s" (trimSuffix "/" $root.Values.images.registry) $repo }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s@%s" $repo $image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (toString (default $root.Chart.AppVersion $image.tag)) }}
{{- end }}
{{- end }}

{{- define "k2.imagePullSecrets" -}}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod and container security contexts shared by every workload (restricted Pod Security). */}}
{{- define "k2.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "k2.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end }}

{{/* ---------------------------------------------------------------- service endpoints */}}

{{- define "k2.kafka.bootstrapServers" -}}
{{- if .Values.kafka.enabled -}}
{{ include "k2.componentName" (list . "kafka") }}:{{ .Values.kafka.port }}
{{- else -}}
{{ required "kafka.external.bootstrapServers is required when kafka.enabled=false" .Values.kafka.external.bootstrapServers }}
{{- end -}}
{{- end }}

{{- define "k2.schemaRegistry.url" -}}
{{- if .Values.schemaRegistry.enabled -}}
http://{{ include "k2.componentName" (list . "schema-registry") }}:{{ .Values.schemaRegistry.port }}/apis/ccompat/v7
{{- else -}}
{{ required "schemaRegistry.external.url is required when schemaRegistry.enabled=false" .Values.schemaRegistry.external.url }}
{{- end -}}
{{- end }}

{{- define "k2.catalog.uri" -}}
{{- if .Values.icebergRest.enabled -}}
http://{{ include "k2.componentName" (list . "iceberg-rest") }}:{{ .Values.icebergRest.port }}
{{- else -}}
{{ required "icebergRest.external.uri is required when icebergRest.enabled=false" .Values.icebergRest.external.uri }}
{{- end -}}
{{- end }}

{{/* S3 endpoint the catalog, the Spark jobs and the operator use: the chart's MinIO or objectStore.endpoint. */}}
{{- define "k2.s3.endpoint" -}}
{{- if .Values.objectStore.endpoint -}}
{{ .Values.objectStore.endpoint }}
{{- else if .Values.minio.enabled -}}
http://{{ include "k2.componentName" (list . "minio") }}:{{ .Values.minio.port }}
{{- end -}}
{{- end }}

{{/* Secret holding the S3 access key pair: objectStore.existingSecret, else MinIO's. */}}
{{- define "k2.s3.secretName" -}}
{{- if .Values.objectStore.existingSecret -}}
{{ .Values.objectStore.existingSecret }}
{{- else if .Values.minio.enabled -}}
{{ include "k2.minio.secretName" . }}
{{- end -}}
{{- end }}

{{- define "k2.s3.accessKeyKey" -}}
{{- if .Values.objectStore.existingSecret -}}{{ .Values.objectStore.accessKeyKey }}{{- else -}}{{ .Values.minio.auth.userKey }}{{- end -}}
{{- end }}

{{- define "k2.s3.secretKeyKey" -}}
{{- if .Values.objectStore.existingSecret -}}{{ .Values.objectStore.secretKeyKey }}{{- else -}}{{ .Values.minio.auth.passwordKey }}{{- end -}}
{{- end }}

{{/*
Non-secret Spark settings for the object store (s3a:// checkpoints, Iceberg S3FileIO of catalog
"k2"), as a dict: what a MedallionPipeline's spec.spark.conf needs for this release. Credentials
are not here: they reach the pods as AWS_* variables from the Secret (k2.s3.env).
*/}}
{{- define "k2.s3.sparkConf" -}}
{{- $endpoint := include "k2.s3.endpoint" . }}
{{- $conf := dict "spark.sql.catalog.k2.io-impl" "org.apache.iceberg.aws.s3.S3FileIO" "spark.sql.catalog.k2.client.region" .Values.objectStore.region "spark.hadoop.fs.s3a.endpoint.region" .Values.objectStore.region }}
{{- if $endpoint }}
{{- $_ := set $conf "spark.hadoop.fs.s3a.endpoint" $endpoint }}
{{- $_ := set $conf "spark.sql.catalog.k2.s3.endpoint" $endpoint }}
{{- $_ := set $conf "spark.hadoop.fs.s3a.connection.ssl.enabled" (toString (hasPrefix "https://" $endpoint)) }}
{{- end }}
{{- $_ := set $conf "spark.hadoop.fs.s3a.path.style.access" (toString .Values.objectStore.pathStyleAccess) }}
{{- $_ := set $conf "spark.sql.catalog.k2.s3.path-style-access" (toString .Values.objectStore.pathStyleAccess) }}
{{- toYaml $conf }}
{{- end }}

{{- define "k2.minio.secretName" -}}
{{- default (include "k2.componentName" (list . "minio")) .Values.minio.auth.existingSecret }}
{{- end }}

{{/* AWS SDK environment (S3 credentials by secret reference) for a container talking to S3. */}}
{{- define "k2.s3.env" -}}
{{- $secret := include "k2.s3.secretName" . -}}
{{- if $secret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "k2.s3.accessKeyKey" . }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "k2.s3.secretKeyKey" . }}
{{- end }}
- name: AWS_REGION
  value: {{ .Values.objectStore.region | quote }}
{{- end }}

{{- define "k2.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "k2.componentName" (list . "operator")) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create=false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "k2.spark.serviceAccountName" -}}
{{- default "spark" .Values.spark.serviceAccount.name }}
{{- end }}
