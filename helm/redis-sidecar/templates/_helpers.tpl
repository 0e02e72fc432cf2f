{{/*
Names and labels of the chart's own resources (the example Deployment, monitors, rules, dashboard).
*/}}
{{- define "redis-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "redis-sidecar.fullname" -}}
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

{{- define "redis-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "redis-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "redis-sidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "redis-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The pods the PodMonitor and the metrics Service select: metrics.podSelector, else the example's. */}}
{{- define "redis-sidecar.podSelector" -}}
{{- if .Values.metrics.podSelector }}
{{- toYaml .Values.metrics.podSelector }}
{{- else }}
{{- include "redis-sidecar.selectorLabels" . }}
{{- end }}
{{- end }}

{{/*
Named templates for app charts
==============================
Each takes a context whose .Values is this chart's values tree (with its defaults), e.g. from an
app chart that has this chart as a dependency:

  {{- $rs := dict "Values" (index .Values "redis-sidecar") "Capabilities" .Capabilities }}
  initContainers:
    {{- include "redis-sidecar.initContainers" $rs | nindent 8 }}
  containers:
    {{- include "redis-sidecar.containers" $rs | nindent 8 }}
    - name: app
      ...
  volumes:
    {{- include "redis-sidecar.volumes" $rs | nindent 8 }}

.Capabilities is optional: with it, nativeSidecar on a cluster older than 1.29 fails the render.
*/}}

{{/* "host:port", with brackets around an IPv6 host. */}}
{{- define "redis-sidecar.hostPort" -}}
{{- $host := index . 0 }}
{{- $port := index . 1 }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int $port) }}
{{- else }}
{{- printf "%s:%d" $host (int $port) }}
{{- end }}
{{- end }}

{{/* The URL the app uses to reach the sidecar: redis://localhost:6379 for the default listen.host. */}}
{{- define "redis-sidecar.appUrl" -}}
{{- $host := .Values.listen.host }}
{{- if has $host (list "127.0.0.1" "0.0.0.0" "::" "localhost") }}
{{- $host = "localhost" }}
{{- end }}
{{- printf "redis://%s" (include "redis-sidecar.hostPort" (list $host .Values.listen.port)) }}
{{- end }}

{{/* The address a process in the pod connects to for listen.host (a wildcard means loopback). */}}
{{- define "redis-sidecar.connectHost" -}}
{{- $host := .Values.listen.host }}
{{- if or (eq $host "0.0.0.0") (eq $host "localhost") }}127.0.0.1
{{- else if eq $host "::" }}::1
{{- else }}{{ $host }}
{{- end }}
{{- end }}

{{- define "redis-sidecar.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}
{{- end }}

{{- define "redis-sidecar.tlsFiles" -}}
{{- $tls := .Values.tls }}
{{- if $tls.existingSecret }}
{{- if $tls.caKey }}
- key: {{ $tls.caKey }}
  path: ca.crt
{{- end }}
{{- if $tls.certKey }}
- key: {{ $tls.certKey }}
  path: tls.crt
- key: {{ $tls.keyKey }}
  path: tls.key
{{- end }}
{{- end }}
{{- end }}

{{/* Rules the schema cannot express; each failure names the value to change. */}}
{{- define "redis-sidecar.validate" -}}
{{- $v := .Values }}
{{- if and $v.nativeSidecar .Capabilities }}
{{- if semverCompare "<1.29-0" .Capabilities.KubeVersion.Version }}
{{- fail (printf "nativeSidecar needs Kubernetes 1.29 or newer (this cluster: %s): set nativeSidecar=false" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
{{- if $v.tls.existingSecret }}
{{- if and (not $v.tls.caKey) (not $v.tls.certKey) }}
{{- fail "tls.existingSecret is set but neither tls.caKey nor tls.certKey names a key in it" }}
{{- end }}
{{- end }}
{{- if ne (empty $v.tls.certKey) (empty $v.tls.keyKey) }}
{{- fail "mutual TLS needs both tls.certKey and tls.keyKey" }}
{{- end }}
{{- if and $v.tls.certKey (not $v.tls.existingSecret) }}
{{- fail "tls.certKey is set but tls.existingSecret is empty" }}
{{- end }}
{{- range $v.extraArgs }}
{{- $flag := regexReplaceAll "=.*$" (toString .) "" }}
{{- if or (has $flag (list "--upstream" "--requirepass" "--listen" "--metrics-listen" "--check-config")) (hasPrefix "--tls-" $flag) }}
{{- fail (printf "extraArgs: %s is managed by the chart (upstream.*, auth.*, listen.*, metrics.*, tls.*); secrets come from Secrets" $flag) }}
{{- end }}
{{- end }}
{{- range $v.extraEnv }}
{{- if has .name (list "REDIS_SIDECAR_UPSTREAM" "REDIS_URL" "REDIS_SIDECAR_REQUIREPASS") }}
{{- fail (printf "extraEnv: %s is managed by the chart: use upstream.existingSecret / auth.existingSecret" .name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* One value of config.*, as the flag expects it (integers without exponent, lists joined by commas). */}}
{{- define "redis-sidecar.flagValue" -}}
{{- if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}
{{- int64 . }}
{{- else if kindIs "slice" . }}
{{- join "," . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{- define "redis-sidecar.args" -}}
{{- $v := .Values -}}
- {{ printf "--listen=%s" (include "redis-sidecar.hostPort" (list $v.listen.host $v.listen.port)) | quote }}
- {{ printf "--metrics-listen=%s" (include "redis-sidecar.hostPort" (list $v.metrics.host $v.metrics.port)) | quote }}
{{- if and $v.tls.existingSecret $v.tls.caKey }}
- {{ printf "--tls-ca-file=%s/ca.crt" (trimSuffix "/" $v.tls.mountPath) | quote }}
{{- end }}
{{- if and $v.tls.existingSecret $v.tls.certKey }}
- {{ printf "--tls-cert-file=%s/tls.crt" (trimSuffix "/" $v.tls.mountPath) | quote }}
- {{ printf "--tls-key-file=%s/tls.key" (trimSuffix "/" $v.tls.mountPath) | quote }}
{{- end }}
{{- if $v.tls.serverName }}
- {{ printf "--tls-server-name=%s" $v.tls.serverName | quote }}
{{- end }}
{{- if $v.tls.insecureSkipVerify }}
- "--tls-insecure-skip-verify"
{{- end }}
{{- range $key, $value := $v.config }}
{{- if not (kindIs "invalid" $value) }}
- {{ printf "--%s=%s" (kebabcase $key) (include "redis-sidecar.flagValue" $value) | quote }}
{{- end }}
{{- end }}
{{- range $v.extraArgs }}
- {{ toString . | quote }}
{{- end }}
{{- end }}

{{- define "redis-sidecar.env" -}}
{{- $v := .Values -}}
- name: REDIS_SIDECAR_UPSTREAM
  valueFrom:
    secretKeyRef:
      name: {{ $v.upstream.existingSecret }}
      key: {{ $v.upstream.key }}
{{- if $v.auth.existingSecret }}
- name: REDIS_SIDECAR_REQUIREPASS
  valueFrom:
    secretKeyRef:
      name: {{ $v.auth.existingSecret }}
      key: {{ $v.auth.key }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "redis-sidecar.probe" -}}
{{- $p := index . 0 -}}
httpGet:
  path: {{ index . 1 }}
  port: {{ index . 2 }}
periodSeconds: {{ $p.periodSeconds }}
timeoutSeconds: {{ $p.timeoutSeconds }}
failureThreshold: {{ $p.failureThreshold }}
{{- end }}

{{/*
redis-sidecar.container: the sidecar container as one list item. Put it under initContainers when
.Values.nativeSidecar is true (it then carries restartPolicy: Always), under containers otherwise,
before the app: its postStart hook holds the app back until the sidecar accepts connections.
redis-sidecar.initContainers and redis-sidecar.containers do that choice for you.
*/}}
{{- define "redis-sidecar.container" -}}
{{- include "redis-sidecar.validate" . }}
{{- $v := .Values -}}
- name: {{ $v.containerName }}
  image: {{ include "redis-sidecar.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $v.nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  args:
    {{- include "redis-sidecar.args" . | nindent 4 }}
  env:
    {{- include "redis-sidecar.env" . | nindent 4 }}
  ports:
    - name: {{ $v.metrics.portName }}
      containerPort: {{ $v.metrics.port }}
      protocol: TCP
  {{- with $v.probes.startup }}
  {{- if .enabled }}
  startupProbe:
    {{- include "redis-sidecar.probe" (list . "/healthz" $v.metrics.portName) | nindent 4 }}
  {{- end }}
  {{- end }}
  {{- with $v.probes.liveness }}
  {{- if .enabled }}
  livenessProbe:
    {{- include "redis-sidecar.probe" (list . "/healthz" $v.metrics.portName) | nindent 4 }}
  {{- end }}
  {{- end }}
  {{- with $v.probes.readiness }}
  {{- if .enabled }}
  readinessProbe:
    {{- include "redis-sidecar.probe" (list . "/readyz" $v.metrics.portName) | nindent 4 }}
  {{- end }}
  {{- end }}
  {{- if not $v.nativeSidecar }}
  {{- $wait := int $v.postStartWaitSeconds }}
  {{- $sleep := int $v.preStopSleepSeconds }}
  {{- if or (gt $wait 0) (gt $sleep 0) }}
  lifecycle:
    {{- if gt $wait 0 }}
    {{- /* The kubelet starts the next container only when this hook returns: listed before the app,
    the sidecar accepts connections before the app starts. */}}
    postStart:
      exec:
        command:
          - /bin/bash
          - -c
          - {{ printf "for ((i = 0; i < %d; i++)); do (exec 3<>/dev/tcp/%s/%d) 2>/dev/null && exit 0; sleep 0.1; done; exit 1" (mul $wait 10) (include "redis-sidecar.connectHost" .) (int $v.listen.port) | quote }}
    {{- end }}
    {{- if gt $sleep 0 }}
    preStop:
      exec:
        command: ["/bin/sleep", {{ $sleep | toString | quote }}]
    {{- end }}
  {{- end }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $tlsFiles := include "redis-sidecar.tlsFiles" . }}
  {{- if or $tlsFiles $v.extraVolumeMounts }}
  volumeMounts:
    {{- if $tlsFiles }}
    - name: {{ printf "%s-tls" $v.containerName }}
      mountPath: {{ $v.tls.mountPath }}
      readOnly: true
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* The sidecar as an init container item when nativeSidecar is true; nothing otherwise. */}}
{{- define "redis-sidecar.initContainers" -}}
{{- if .Values.nativeSidecar }}
{{- include "redis-sidecar.container" . }}
{{- end }}
{{- end }}

{{/* The sidecar as a container item when nativeSidecar is false; nothing otherwise. */}}
{{- define "redis-sidecar.containers" -}}
{{- if not .Values.nativeSidecar }}
{{- include "redis-sidecar.container" . }}
{{- end }}
{{- end }}

{{/* The pod volumes the sidecar needs (the TLS Secret), as list items; nothing when none. */}}
{{- define "redis-sidecar.volumes" -}}
{{- $files := include "redis-sidecar.tlsFiles" . }}
{{- if $files -}}
- name: {{ printf "%s-tls" .Values.containerName }}
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: {{ .Values.tls.defaultMode }}
    items:
      {{- $files | trim | nindent 6 }}
{{- end }}
{{- end }}

{{/* Prometheus scrape annotations for the pod (the common prometheus.io/* convention). */}}
{{- define "redis-sidecar.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | toString | quote }}
prometheus.io/path: /metrics
{{- end }}
