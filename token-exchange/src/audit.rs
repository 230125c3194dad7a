//! The audit record of one decision (SPEC §9, §11). The core fills it; the broker adds
//! the latency and writes it as one flat JSON line. It never holds a token or a key.

use serde::Serialize;

/// `"allow"` or `"deny"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub event: &'static str,
    pub decision: Decision,
    /// `"ok"` or the error code sent.
    pub reason: &'static str,
    /// The internal reason, for operators; never sent to the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub audience: Option<String>,
    pub scope_requested: Option<String>,
    pub scope_granted: Option<String>,
    pub boundary: Option<String>,
    pub node: Option<String>,
    pub jti_in: Option<String>,
    pub jti_out: Option<String>,
    pub actor: Option<String>,
}

impl AuditRecord {
    pub fn new(event: &'static str) -> Self {
        Self {
            event,
            decision: Decision::Deny,
            reason: "server_error",
            detail: None,
            subject: None,
            from: None,
            audience: None,
            scope_requested: None,
            scope_granted: None,
            boundary: None,
            node: None,
            jti_in: None,
            jti_out: None,
            actor: None,
        }
    }
}
