{{- define "clustersync-agent.name" -}}
{{- default "clustersync-agent" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}
