{{/* The chart name, or nameOverride. */}}
{{- define "sbmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: the release name, with "-sbmesh" unless it already contains
the chart name. A release named sbmesh makes the objects manifests/base makes.
*/}}
{{- define "sbmesh.fullname" -}}
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
The MutatingWebhookConfiguration: "00-" sorts before "azure-wi-webhook-..." and "istio-...", and
the API server calls mutating webhook configurations in name order.
*/}}
{{- define "sbmesh.webhookConfigurationName" -}}
{{- printf "00-%s" (include "sbmesh.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The one webhook in it. */}}
{{- define "sbmesh.webhookName" -}}
sbmesh.sbmesh.io
{{- end }}

{{/* selfManaged: the Secret the webhook keeps its CA and serving pair in. */}}
{{- define "sbmesh.certsSecretName" -}}
{{- printf "%s-serving-cert" (include "sbmesh.fullname" .) }}
{{- end }}

{{/* certManager and existingSecret: the kubernetes.io/tls Secret mounted at /etc/sbmesh/tls. */}}
{{- define "sbmesh.tlsSecretName" -}}
{{- if eq .Values.certs.mode "existingSecret" }}
{{- required "certs.existingSecret.name is required with certs.mode existingSecret" .Values.certs.existingSecret.name }}
{{- else }}
{{- printf "%s-tls" (include "sbmesh.fullname" .) }}
{{- end }}
{{- end }}

{{- define "sbmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The pods' selector: immutable on a Deployment, so never anything a user can add to. */}}
{{- define "sbmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sbmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object: commonLabels first, so the chart's own win. */}}
{{- define "sbmesh.labels" -}}
{{- $labels := dict }}
{{- range $k, $v := .Values.commonLabels }}
{{- $_ := set $labels $k ($v | toString) }}
{{- end }}
{{- $_ := set $labels "helm.sh/chart" (include "sbmesh.chart" .) }}
{{- $_ := set $labels "app.kubernetes.io/name" (include "sbmesh.name" .) }}
{{- $_ := set $labels "app.kubernetes.io/instance" .Release.Name }}
{{- $_ := set $labels "app.kubernetes.io/version" (.Values.image.tag | default .Chart.AppVersion | toString | trunc 63 | trimSuffix "-") }}
{{- $_ := set $labels "app.kubernetes.io/managed-by" .Release.Service }}
{{- $_ := set $labels "app.kubernetes.io/part-of" "sbmesh" }}
{{- toYaml $labels }}
{{- end }}

{{/*
metadata.annotations of an object: commonAnnotations and the object's own (which win).
Call with (dict "root" $ "extra" (dict ...) "indent" N) right after the line before it
(`{{- include ... }}`); renders nothing when there are none. indent defaults to 2.
*/}}
{{- define "sbmesh.annotations" -}}
{{- $annotations := dict }}
{{- range $k, $v := .root.Values.commonAnnotations }}
{{- $_ := set $annotations $k ($v | toString) }}
{{- end }}
{{- range $k, $v := (.extra | default dict) }}
{{- $_ := set $annotations $k ($v | toString) }}
{{- end }}
{{- if $annotations }}
{{- printf "annotations:\n%s" (toYaml $annotations | indent 2) | nindent (.indent | default 2 | int) }}
{{- end }}
{{- end }}

{{- define "sbmesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/* certManager and existingSecret serve a mounted pair; selfManaged serves the pair it writes into an in-memory emptyDir. */}}
{{- define "sbmesh.mountsTls" -}}
{{- if ne .Values.certs.mode "selfManaged" }}true{{ end }}
{{- end }}
