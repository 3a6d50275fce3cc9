{{/*
Names, labels, images and the render-time checks shared by every template.
Invariant: resource names derive from "aegis.fullname" only, so the Safe URL, the
certificate names and the admin identity always agree with the objects created.
*/}}

{{- define "aegis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aegis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aegis.safe.fullname" -}}{{ include "aegis.fullname" . }}-safe{{- end }}
{{- define "aegis.webhook.fullname" -}}{{ include "aegis.fullname" . }}-webhook{{- end }}
{{- define "aegis.sentinel.fullname" -}}{{ include "aegis.fullname" . }}-sentinel{{- end }}

{{/* Labels on every object; selector labels are the stable subset. */}}
{{- define "aegis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "aegis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aegis
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Usage: include "aegis.componentLabels" (list $ "safe") */}}
{{- define "aegis.componentLabels" -}}
{{ include "aegis.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "aegis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aegis.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Usage: include "aegis.image" (list $ .Values.safe.image "aegis-safe") */}}
{{- define "aegis.image" -}}
{{- $root := index . 0 }}
{{- $img := index . 1 }}
{{- $default := printf "%s/%s" $root.Values.image.repositoryPrefix (index . 2) }}
{{- $tag := $img.tag | default $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- printf "%s:%s" ($img.repository | default $default) $tag }}
{{- end }}

{{/* In-cluster URL of the Safe's API; the Safe's certificate carries this host name. */}}
{{- define "aegis.safe.host" -}}
{{ include "aegis.safe.fullname" . }}.{{ .Release.Namespace }}.svc
{{- end }}
{{- define "aegis.safe.url" -}}
https://{{ include "aegis.safe.host" . }}:8443
{{- end }}

{{- define "aegis.safe.rootKeySecret" -}}
{{ .Values.safe.rootKey.secretName | default (printf "%s-safe-root-key" (include "aegis.fullname" .)) }}
{{- end }}

{{/* Secret holding the Safe's serving certificate and CA, whatever the TLS mode. */}}
{{- define "aegis.safe.tlsSecret" -}}
{{- if eq .Values.safe.tls.mode "secret" }}{{ .Values.safe.tls.secretName }}{{ else }}{{ include "aegis.safe.fullname" . }}-tls{{ end }}
{{- end }}
{{- define "aegis.webhook.tlsSecret" -}}
{{- if eq .Values.webhook.tls.mode "secret" }}{{ .Values.webhook.tls.secretName }}{{ else }}{{ include "aegis.webhook.fullname" . }}-tls{{ end }}
{{- end }}

{{/* The admins the Safe accepts: the Sentinel (when enabled) plus safe.admins. */}}
{{- define "aegis.safe.admins" -}}
{{- $admins := list }}
{{- if .Values.sentinel.enabled }}
{{- $admins = append $admins (printf "%s/%s" .Release.Namespace (include "aegis.sentinel.fullname" .)) }}
{{- end }}
{{- range .Values.safe.admins }}
{{- $admins = append $admins . }}
{{- end }}
{{- toJson (uniq $admins) }}
{{- end }}

{{/* The Safe's CA as a projected volume source: only ca.crt, never the private key. */}}
{{- define "aegis.safe.caVolume" -}}
- name: safe-ca
  secret:
    secretName: {{ include "aegis.safe.tlsSecret" . }}
    defaultMode: 0444
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}

{{/*
Generated TLS material for one component, stable across upgrades: an existing Secret
(found with `lookup`) is reused as is; otherwise a new CA and a certificate for the
service's DNS names are generated. Returns YAML with keys ca, crt, key (PEM).
Usage: include "aegis.generatedTLS" (list $ secretName serviceName validityDays)
*/}}
{{- define "aegis.generatedTLS" -}}
{{- $root := index . 0 }}
{{- $secretName := index . 1 }}
{{- $svc := index . 2 }}
{{- $days := int (index . 3) }}
{{- $ns := $root.Release.Namespace }}
{{- $existing := lookup "v1" "Secret" $ns $secretName }}
{{- if and $existing (hasKey $existing "data") (hasKey $existing.data "ca.crt") (hasKey $existing.data "tls.crt") (hasKey $existing.data "tls.key") }}
ca: {{ index $existing.data "ca.crt" | b64dec | quote }}
crt: {{ index $existing.data "tls.crt" | b64dec | quote }}
key: {{ index $existing.data "tls.key" | b64dec | quote }}
{{- else }}
{{- $dns := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $root.Values.clusterDomain) }}
{{- /* ECDSA P-256: small, fast to generate, accepted by the API server and rustls. */}}
{{- $ca := genCAWithKey (printf "%s-ca" $svc) $days (genPrivateKey "ecdsa") }}
{{- $cert := genSignedCertWithKey (printf "%s.%s.svc" $svc $ns) nil $dns $days $ca (genPrivateKey "ecdsa") }}
ca: {{ $ca.Cert | quote }}
crt: {{ $cert.Cert | quote }}
key: {{ $cert.Key | quote }}
{{- end }}
{{- end }}

{{/*
A cert-manager Certificate for one component.
Usage: include "aegis.certificate" (list $ componentValues name serviceName component)
*/}}
{{- define "aegis.certificate" -}}
{{- $root := index . 0 }}
{{- $tls := (index . 1).tls }}
{{- $name := index . 2 }}
{{- $svc := index . 3 }}
{{- $ns := $root.Release.Namespace }}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ $name }}
  namespace: {{ $ns }}
  labels:
    {{- include "aegis.componentLabels" (list $root (index . 4)) | nindent 4 }}
spec:
  secretName: {{ $name }}
  duration: {{ $tls.certManager.duration }}
  renewBefore: {{ $tls.certManager.renewBefore }}
  commonName: {{ $svc }}.{{ $ns }}.svc
  dnsNames:
    - {{ $svc }}
    - {{ $svc }}.{{ $ns }}
    - {{ $svc }}.{{ $ns }}.svc
    - {{ $svc }}.{{ $ns }}.svc.{{ $root.Values.clusterDomain }}
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
  usages:
    - server auth
    - digital signature
    - key encipherment
  issuerRef:
    {{- if $tls.certManager.issuerRef.name }}
    name: {{ $tls.certManager.issuerRef.name }}
    kind: {{ $tls.certManager.issuerRef.kind }}
    group: {{ $tls.certManager.issuerRef.group }}
    {{- else }}
    name: {{ include "aegis.fullname" $root }}-ca
    kind: Issuer
    group: cert-manager.io
    {{- end }}
{{- end }}

{{/*
Render-time checks for values that conflict. Each failure says what to change.
Included once, from templates/validate.yaml.
*/}}
{{- define "aegis.validate" -}}
{{- $v := .Values }}
{{- range $component := list "safe" "webhook" }}
{{- $tls := (index $v $component).tls }}
{{- if and (ne $tls.mode "secret") $tls.secretName }}
{{- fail (printf "%s.tls.secretName is set but %s.tls.mode is %q: set %s.tls.mode=secret to use that Secret, or clear %s.tls.secretName" $component $component $tls.mode $component $component) }}
{{- end }}
{{- if and (eq $tls.mode "secret") (not $tls.secretName) }}
{{- fail (printf "%s.tls.mode=secret needs %s.tls.secretName: the name of an existing Secret with tls.crt, tls.key and ca.crt" $component $component) }}
{{- end }}
{{- if and (ne $tls.mode "certManager") $tls.certManager.issuerRef.name }}
{{- fail (printf "%s.tls.certManager.issuerRef.name is set but %s.tls.mode is %q: set %s.tls.mode=certManager, or clear the issuerRef" $component $component $tls.mode $component) }}
{{- end }}
{{- end }}
{{- if and (eq $v.webhook.tls.mode "secret") (not $v.webhook.tls.caBundle) }}
{{- fail "webhook.tls.mode=secret needs webhook.tls.caBundle: the PEM of the CA that signed the certificate in webhook.tls.secretName (the API server verifies the webhook with it)" }}
{{- end }}
{{- if and (ne $v.webhook.tls.mode "secret") $v.webhook.tls.caBundle }}
{{- fail (printf "webhook.tls.caBundle is set but webhook.tls.mode is %q: the chart computes caBundle itself in that mode; clear webhook.tls.caBundle or set webhook.tls.mode=secret" $v.webhook.tls.mode) }}
{{- end }}
{{- if and $v.webhook.tls.caBundle (not (contains "-----BEGIN CERTIFICATE-----" $v.webhook.tls.caBundle)) }}
{{- fail "webhook.tls.caBundle must be PEM (-----BEGIN CERTIFICATE-----...), not base64 of it" }}
{{- end }}
{{- if eq $v.safe.tokenAuth "jwks" }}
{{- if not $v.safe.jwks.issuer }}
{{- fail "safe.tokenAuth=jwks needs safe.jwks.issuer: the iss of your cluster's ServiceAccount tokens (kubectl get --raw /.well-known/openid-configuration)" }}
{{- end }}
{{- if and $v.safe.jwks.url $v.safe.jwks.configMap }}
{{- fail "safe.jwks.url and safe.jwks.configMap are both set: choose one source of keys" }}
{{- end }}
{{- if not (or $v.safe.jwks.url $v.safe.jwks.configMap) }}
{{- fail "safe.tokenAuth=jwks needs safe.jwks.url or safe.jwks.configMap (a ConfigMap with key jwks.json)" }}
{{- end }}
{{- else if or $v.safe.jwks.issuer $v.safe.jwks.url $v.safe.jwks.configMap }}
{{- fail (printf "safe.jwks.* is set but safe.tokenAuth is %q: set safe.tokenAuth=jwks to verify tokens locally, or clear safe.jwks" $v.safe.tokenAuth) }}
{{- end }}
{{- if ge (int $v.webhook.registry.timeoutSeconds) (int $v.webhook.timeoutSeconds) }}
{{- fail (printf "webhook.registry.timeoutSeconds (%d) must be less than webhook.timeoutSeconds (%d): a registry lookup must finish before the API server gives up on the webhook" (int $v.webhook.registry.timeoutSeconds) (int $v.webhook.timeoutSeconds)) }}
{{- end }}
{{- if and $v.webhook.pdb.enabled (lt (int $v.webhook.replicas) 2) }}
{{- fail (printf "webhook.pdb.enabled needs webhook.replicas >= 2 (got %d): with one replica the PodDisruptionBudget would block every node drain; raise replicas or set webhook.pdb.enabled=false" (int $v.webhook.replicas)) }}
{{- end }}
{{- if and $v.networkPolicy.enabled (not $v.networkPolicy.apiServerCIDRs) }}
{{- fail "networkPolicy.enabled needs networkPolicy.apiServerCIDRs, the addresses the API server calls the webhook from (kubectl get endpoints kubernetes -n default); without them the webhook would be unreachable" }}
{{- end }}
{{- range $v.safe.admins }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$" .) }}
{{- fail (printf "safe.admins entry %q is not namespace/serviceaccount" .) }}
{{- end }}
{{- end }}
{{- if and (not $v.sentinel.enabled) (not $v.safe.admins) }}
{{- fail "no administrator: sentinel.enabled=false and safe.admins is empty, so nobody could store a secret; enable the Sentinel or list safe.admins" }}
{{- end }}
{{- end }}
