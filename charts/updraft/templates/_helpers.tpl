{{/* Chart name, overridable. */}}
{{- define "updraft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of every object: the release name when it already says "updraft". */}}
{{- define "updraft.fullname" -}}
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

{{/* Name of cluster-scoped objects: qualified by the namespace, so two releases of the
same name in different namespaces do not fight over one ClusterRole. */}}
{{- define "updraft.clusterName" -}}
{{- printf "%s-%s" (include "updraft.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "updraft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "updraft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "updraft.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "updraft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: updraft
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "updraft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "updraft.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. Arguments: (list image appVersion). */}}
{{- define "updraft.imageRef" -}}
{{- $image := index . 0 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default (index . 1) $image.tag) }}
{{- end }}
{{- end }}

{{/* Namespace the operator watches and the default OtaGateway lives in. */}}
{{- define "updraft.gatewayNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}
