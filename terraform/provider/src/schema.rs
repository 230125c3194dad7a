//! The provider's schemas: one list of attributes per resource and data source, from which
//! both the protocol's `Schema` and the value type are derived, so the two cannot drift.

use crate::proto;
use crate::value::{Ty, Val};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Required,
    Optional,
    /// Set by the provider only.
    Computed,
}

#[derive(Clone, Debug)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Ty,
    pub mode: Mode,
    pub sensitive: bool,
    /// A change replaces the object (the broker cannot change it in place).
    pub force_new: bool,
    pub doc: &'static str,
}

const fn attr(name: &'static str, ty: Ty, mode: Mode, doc: &'static str) -> Attr {
    Attr {
        name,
        ty,
        mode,
        sensitive: false,
        force_new: false,
        doc,
    }
}

pub fn required(name: &'static str, ty: Ty, doc: &'static str) -> Attr {
    attr(name, ty, Mode::Required, doc)
}

pub fn optional(name: &'static str, ty: Ty, doc: &'static str) -> Attr {
    attr(name, ty, Mode::Optional, doc)
}

pub fn computed(name: &'static str, ty: Ty, doc: &'static str) -> Attr {
    attr(name, ty, Mode::Computed, doc)
}

impl Attr {
    pub fn replaces(mut self) -> Self {
        self.force_new = true;
        self
    }

    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
}

pub fn list_of_strings() -> Ty {
    Ty::List(Box::new(Ty::String))
}

#[derive(Clone, Debug)]
pub struct Schema {
    pub attrs: Vec<Attr>,
    pub doc: &'static str,
}

impl Schema {
    pub fn ty(&self) -> Ty {
        Ty::Object(self.attrs.iter().map(|a| (a.name, a.ty.clone())).collect())
    }

    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    /// An object of this schema with every attribute null.
    pub fn empty(&self) -> Val {
        Val::Map(
            self.attrs
                .iter()
                .map(|a| (a.name.to_owned(), Val::Null))
                .collect(),
        )
    }

    pub fn to_proto(&self) -> proto::Schema {
        proto::Schema {
            version: 0,
            block: Some(block(self.doc, &self.attrs)),
        }
    }
}

/// Object-typed attributes become nested blocks (`require { uid = [1000] }`) with every
/// inner attribute optional: the broker says which combinations are valid. (Nested
/// attributes would read closer to the config file, but Terraform 1.0 cannot plan a
/// null one.)
fn block(doc: &str, attrs: &[Attr]) -> proto::Block {
    let mut b = proto::Block {
        description: doc.to_owned(),
        description_kind: proto::StringKind::Plain as i32,
        ..Default::default()
    };
    for a in attrs {
        match &a.ty {
            Ty::Object(inner) => {
                let inner: Vec<Attr> = inner
                    .iter()
                    .map(|(name, ty)| optional(name, ty.clone(), ""))
                    .collect();
                b.block_types.push(proto::NestedBlock {
                    type_name: a.name.to_owned(),
                    block: Some(block(a.doc, &inner)),
                    nesting: proto::BlockNesting::Single as i32,
                    min_items: 0,
                    max_items: 0,
                });
            }
            ty => b.attributes.push(proto::Attribute {
                name: a.name.to_owned(),
                r#type: ty.to_json().to_string().into_bytes(),
                description: a.doc.to_owned(),
                required: a.mode == Mode::Required,
                optional: a.mode == Mode::Optional,
                computed: a.mode == Mode::Computed,
                sensitive: a.sensitive,
                description_kind: proto::StringKind::Plain as i32,
            }),
        }
    }
    b
}

pub fn provider() -> Schema {
    Schema {
        doc: "trustbroker's admin API.",
        attrs: vec![
            optional(
                "endpoint",
                Ty::String,
                "The broker's base URL, e.g. https://broker.example.org. Default: $TRUSTBROKER_ENDPOINT.",
            ),
            optional(
                "admin_token",
                Ty::String,
                "Bearer token for /admin/v1. Default: $TRUSTBROKER_ADMIN_TOKEN.",
            )
            .sensitive(),
            optional(
                "ca_certificate",
                Ty::String,
                "PEM of an extra root CA for the broker's TLS certificate.",
            ),
        ],
    }
}

pub fn trust_domain() -> Schema {
    Schema {
        doc: "A trust domain the broker federates with (a [[trust_domain]] table).",
        attrs: vec![
            computed("id", Ty::String, "The trust domain's name."),
            required(
                "name",
                Ty::String,
                "SPIFFE trust domain name, or a label for an OIDC issuer.",
            )
            .replaces(),
            optional(
                "kind",
                Ty::String,
                "\"spiffe\" (default), \"oidc\" or \"broker\".",
            )
            .replaces(),
            optional(
                "bundle_endpoint",
                Ty::Object(vec![
                    ("url", Ty::String),
                    ("profile", Ty::String),
                    ("spiffe_id", Ty::String),
                ]),
                "Where the broker fetches this domain's SPIFFE bundle.",
            ),
            optional("issuer", Ty::String, "OIDC issuer (discovery + JWKS)."),
            optional(
                "audiences",
                list_of_strings(),
                "The aud a foreign token must carry.",
            ),
            optional(
                "max_token_age",
                Ty::String,
                "Refuse foreign tokens whose exp - iat is longer.",
            ),
            optional("algorithms", list_of_strings(), "Allowed JWS algorithms."),
            optional(
                "allow_private_ranges",
                Ty::Bool,
                "The domain's endpoints may live on private addresses.",
            ),
        ],
    }
}

pub fn trust_bundle() -> Schema {
    Schema {
        doc: "The keys of an API-managed trust domain that fetches none itself.",
        attrs: vec![
            computed("id", Ty::String, "The trust domain's name."),
            required("trust_domain", Ty::String, "The trust domain's name.").replaces(),
            required("bundle", Ty::String, "The SPIFFE bundle, as JSON."),
        ],
    }
}

pub fn boundary() -> Schema {
    Schema {
        doc: "A boundary: who may cross from a trust domain, to which audiences, with which scopes.",
        attrs: vec![
            computed("id", Ty::String, "The boundary's name."),
            required("name", Ty::String, "The boundary's name.").replaces(),
            required("from", Ty::String, "A trust domain name."),
            required(
                "subjects",
                list_of_strings(),
                "Globs on the federated subject.",
            ),
            required(
                "audiences",
                list_of_strings(),
                "Audiences this rule may issue for.",
            ),
            required(
                "scopes",
                list_of_strings(),
                "The most a crossing may carry.",
            ),
            optional(
                "max_ttl",
                Ty::String,
                "Longest lifetime of an issued token, e.g. \"10m\".",
            ),
            optional(
                "attestation",
                Ty::String,
                "\"required\" (default), \"optional\" or \"none\".",
            ),
            optional(
                "unattested_scopes",
                list_of_strings(),
                "Scopes still allowed without attestation.",
            ),
            optional(
                "require",
                Ty::Object(vec![
                    ("exe_sha256", list_of_strings()),
                    ("uid", Ty::List(Box::new(Ty::Number))),
                    ("gid", Ty::List(Box::new(Ty::Number))),
                    ("exe", list_of_strings()),
                    ("container_id", list_of_strings()),
                ]),
                "Runtime facts the evidence must show.",
            ),
            optional(
                "claims",
                Ty::Map(Box::new(Ty::String)),
                "Globs on the foreign token's claims.",
            ),
            optional(
                "workload",
                Ty::String,
                "For OIDC subjects: the enforcer registration behind them.",
            ),
            optional(
                "max_hops",
                Ty::Number,
                "Most boundary crossings in a token's history.",
            ),
            optional(
                "single_use",
                Ty::Bool,
                "The subject token is accepted once.",
            ),
            optional(
                "token_type",
                Ty::String,
                "\"access_token\" (default) or \"jwt\".",
            ),
        ],
    }
}

pub fn join_token() -> Schema {
    Schema {
        doc: "A single-use join token with which a node's enforcer enrolls.",
        attrs: vec![
            computed("id", Ty::String, "SHA-256 of the token (hex)."),
            required("node", Ty::String, "The node's name.").replaces(),
            optional(
                "ttl",
                Ty::String,
                "How long the token may be used, e.g. \"10m\" (default 10m, at most 24h).",
            )
            .replaces(),
            computed("token", Ty::String, "The token. Kept in state only.").sensitive(),
            computed(
                "expires_at",
                Ty::Number,
                "Unix time after which the token is refused.",
            ),
        ],
    }
}

pub fn bundle_data() -> Schema {
    Schema {
        doc: "The broker's own SPIFFE bundle, to hand to its peers.",
        attrs: vec![
            computed("id", Ty::String, "The bundle's sequence number."),
            computed("bundle", Ty::String, "The SPIFFE bundle, as JSON."),
            computed("sequence", Ty::Number, "spiffe_sequence."),
            computed(
                "key_ids",
                list_of_strings(),
                "kid of every key in the bundle.",
            ),
        ],
    }
}

pub fn openid_configuration_data() -> Schema {
    Schema {
        doc: "The broker's OpenID configuration, for cloud IAM federation.",
        attrs: vec![
            computed("id", Ty::String, "The issuer."),
            computed("issuer", Ty::String, "issuer"),
            computed("jwks_uri", Ty::String, "jwks_uri"),
            computed("token_endpoint", Ty::String, "token_endpoint"),
            computed(
                "introspection_endpoint",
                Ty::String,
                "introspection_endpoint",
            ),
            computed("revocation_endpoint", Ty::String, "revocation_endpoint"),
            computed("document", Ty::String, "The whole document, as JSON."),
        ],
    }
}
