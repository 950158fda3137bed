{{/* Names, labels and the pieces every pod shares. */}}
{{- define "audit-trail.fullname" -}}
{{- printf "%s" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "audit-trail.labels" -}}
app.kubernetes.io/name: audit-trail
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "audit-trail.selector" -}}
app.kubernetes.io/name: audit-trail
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "audit-trail.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "audit-trail.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "audit-trail.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end -}}

{{/* Kafka client settings of a service: PREFIX is AUDIT_PROJECTOR or AUDIT_QUERY, principal and password key. */}}
{{- define "audit-trail.kafkaEnv" -}}
- name: {{ .prefix }}_BOOTSTRAP_SERVERS
  value: {{ .root.Values.kafka.bootstrapServers | quote }}
{{- if ne .root.Values.kafka.securityProtocol "PLAINTEXT" }}
- name: {{ .prefix }}_KAFKA__SECURITY_PROTOCOL
  value: {{ .root.Values.kafka.securityProtocol | quote }}
- name: {{ .prefix }}_KAFKA__SASL_MECHANISM
  value: {{ .root.Values.kafka.saslMechanism | quote }}
- name: {{ .prefix }}_KAFKA__SASL_USERNAME
  value: {{ .principal | quote }}
- name: {{ .prefix }}_KAFKA__SASL_PASSWORD_FILE
  value: /etc/audit-trail/kafka/{{ .passwordKey }}
{{- if .root.Values.kafka.caSecret }}
- name: {{ .prefix }}_KAFKA__CA_FILE
  value: /etc/audit-trail/kafka-ca/ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{- define "audit-trail.kafkaVolumeMounts" -}}
{{- if ne .Values.kafka.securityProtocol "PLAINTEXT" }}
- name: kafka-credentials
  mountPath: /etc/audit-trail/kafka
  readOnly: true
{{- if .Values.kafka.caSecret }}
- name: kafka-ca
  mountPath: /etc/audit-trail/kafka-ca
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "audit-trail.kafkaVolumes" -}}
{{- if ne .Values.kafka.securityProtocol "PLAINTEXT" }}
- name: kafka-credentials
  secret:
    secretName: {{ .Values.secrets.kafkaSecret }}
    defaultMode: 0400
{{- if .Values.kafka.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.caSecret }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "audit-trail.topicsEnv" -}}
- name: {{ .prefix }}_DB_SCHEMA
  value: {{ .root.Values.postgres.schema | quote }}
- name: {{ .prefix }}_CONTROL_SCHEMA
  value: {{ .root.Values.postgres.controlSchema | quote }}
{{- end -}}
