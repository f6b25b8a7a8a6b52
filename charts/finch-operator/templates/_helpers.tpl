{{/*
Expand the name of the chart.
*/}}
{{- define "finch-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name (63 characters at most, the DNS label limit).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "finch-operator.fullname" -}}
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

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "finch-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "finch-operator.labels" -}}
helm.sh/chart: {{ include "finch-operator.chart" . }}
{{ include "finch-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels (the manager pods).
*/}}
{{- define "finch-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "finch-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
control-plane: controller-manager
{{- end }}

{{/*
The ServiceAccount the manager runs as.
*/}}
{{- define "finch-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "finch-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference: repository:tag, or repository:tag@digest when a digest pins it.
Takes (dict "repository" R "tag" T "digest" D).
*/}}
{{- define "finch-operator.imageRef" -}}
{{- $ref := printf "%s:%s" .repository .tag }}
{{- if .digest }}
{{- $ref = printf "%s@%s" $ref .digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{/*
The manager image.
*/}}
{{- define "finch-operator.image" -}}
{{- include "finch-operator.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag) "digest" .Values.image.digest) }}
{{- end }}

{{/*
The metrics port: metrics.port, else 8443 for HTTPS (kubebuilder's) and 8080 for plain HTTP.
*/}}
{{- define "finch-operator.metricsPort" -}}
{{- if .Values.metrics.port }}{{ .Values.metrics.port }}{{ else if .Values.metrics.secure }}8443{{ else }}8080{{ end }}
{{- end }}
