# Federates a SPIFFE trust domain (keys handed over as a bundle) and GitHub Actions
# (keys followed by OIDC discovery), and lets each cross one boundary.
#
#   export TRUSTBROKER_ENDPOINT=http://127.0.0.1:8080 TRUSTBROKER_ADMIN_TOKEN=…
#   terraform init && terraform apply

terraform {
  required_version = ">= 1.0"
  required_providers {
    trustbroker = {
      source  = "trustbroker/trustbroker"
      version = "~> 0.1"
    }
  }
}

# endpoint and admin_token come from TRUSTBROKER_ENDPOINT and TRUSTBROKER_ADMIN_TOKEN.
provider "trustbroker" {}

variable "cluster_domain" {
  description = "The SPIFFE trust domain of the workloads' home cluster."
  type        = string
  default     = "cluster-a.example"
}

variable "cluster_bundle_file" {
  description = "That domain's SPIFFE bundle (its JWT-SVID keys), e.g. from `spire-server bundle show -format spiffe`."
  type        = string
  default     = "cluster-a.bundle.json"
}

variable "github_issuer" {
  description = "GitHub Actions' OIDC issuer (GitHub Enterprise Server has its own)."
  type        = string
  default     = "https://token.actions.githubusercontent.com"
}

variable "github_repositories" {
  description = "Glob on the `repository` claim: whose workflows may deploy."
  type        = string
  default     = "acme/*"
}

variable "node" {
  description = "A node whose enforcer enrolls with a join token."
  type        = string
  default     = "node-1"
}

resource "trustbroker_trust_domain" "cluster" {
  name = var.cluster_domain
  kind = "spiffe"
}

resource "trustbroker_trust_bundle" "cluster" {
  trust_domain = trustbroker_trust_domain.cluster.name
  bundle       = file(var.cluster_bundle_file)
}

resource "trustbroker_trust_domain" "github" {
  name          = "github-actions"
  kind          = "oidc"
  issuer        = var.github_issuer
  max_token_age = "1h"
}

# Payments workloads of the cluster reach the payments API. With evidence from their
# node's enforcer they may write; without it, only read.
resource "trustbroker_boundary" "cluster_to_payments" {
  name              = "cluster-to-payments"
  from              = trustbroker_trust_domain.cluster.name
  subjects          = ["spiffe://${var.cluster_domain}/ns/payments/sa/*"]
  audiences         = ["https://payments.example/api"]
  scopes            = ["payments.read", "payments.write"]
  max_ttl           = "10m"
  attestation       = "optional"
  unattested_scopes = ["payments.read"]
  max_hops          = 2
}

# Deploy jobs of the organisation's repositories: no enforcer on a hosted runner, so the
# token is single-use, short-lived and narrowed by the job's claims.
resource "trustbroker_boundary" "github_deploy" {
  name        = "github-deploy"
  from        = trustbroker_trust_domain.github.name
  subjects    = ["github-actions#repo:${var.github_repositories}:**"]
  audiences   = ["https://payments.example/api"]
  scopes      = ["deploy"]
  max_ttl     = "5m"
  attestation = "none"
  single_use  = true
  claims = {
    repository = var.github_repositories
  }
}

resource "trustbroker_join_token" "node" {
  node = var.node
  ttl  = "1h"
}

data "trustbroker_openid_configuration" "broker" {}

data "trustbroker_bundle" "broker" {}

output "issuer" {
  description = "For cloud IAM: the OIDC provider to register."
  value       = data.trustbroker_openid_configuration.broker.issuer
}

output "jwks_uri" {
  value = data.trustbroker_openid_configuration.broker.jwks_uri
}

output "broker_bundle" {
  description = "The broker's SPIFFE bundle, for peers that federate with it."
  value       = data.trustbroker_bundle.broker.bundle
}

output "join_token" {
  description = "Hand to the node's enforcer (`trustbroker-enforcer enroll`)."
  value       = trustbroker_join_token.node.token
  sensitive   = true
}

output "join_token_id" {
  value = trustbroker_join_token.node.id
}
