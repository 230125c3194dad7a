//! `enforcer.toml`: which workloads this node vouches for (SPEC §6).

use std::path::Path;

use serde::Deserialize;
use token_exchange::attestation::ProcFacts;
use trust_bundles::SpiffeId;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    workload: Vec<RawWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    spiffe_id: String,
    selectors: Selectors,
}

/// Facts a process must show, all of them (SPEC §6: "all must match").
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selectors {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub exe: Option<String>,
    pub exe_sha256: Option<String>,
    pub container_id: Option<String>,
    pub cgroup: Option<String>,
}

impl Selectors {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn matches(&self, p: &ProcFacts) -> bool {
        self.uid.is_none_or(|v| v == p.uid)
            && self.gid.is_none_or(|v| v == p.gid)
            && self.exe.as_ref().is_none_or(|v| *v == p.exe)
            && self.exe_sha256.as_ref().is_none_or(|v| *v == p.exe_sha256)
            && self
                .container_id
                .as_ref()
                .is_none_or(|v| p.container_id.as_ref() == Some(v))
            && self.cgroup.as_ref().is_none_or(|v| *v == p.cgroup)
    }
}

/// A workload registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub spiffe_id: SpiffeId,
    pub selectors: Selectors,
}

/// All registrations, in file order.
#[derive(Debug, Clone, Default)]
pub struct Registrations(pub Vec<Registration>);

impl Registrations {
    /// Parses `enforcer.toml`, listing every problem.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let mut out = Vec::new();
        for (i, w) in raw.workload.into_iter().enumerate() {
            match w.spiffe_id.parse::<SpiffeId>() {
                Ok(id) if !id.path().is_empty() => {
                    if w.selectors.is_empty() {
                        problems.push(format!(
                            "workload[{i}].selectors: at least one selector is required"
                        ));
                    }
                    out.push(Registration {
                        spiffe_id: id,
                        selectors: w.selectors,
                    });
                }
                Ok(_) => problems.push(format!("workload[{i}].spiffe_id: needs a path")),
                Err(e) => problems.push(format!("workload[{i}].spiffe_id: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(Self(out))
        } else {
            Err(problems)
        }
    }

    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        Self::parse(&text).map_err(|p| {
            p.into_iter()
                .map(|m| format!("{}: {m}", path.display()))
                .collect()
        })
    }

    /// The first registration whose selectors all match.
    pub fn find(&self, facts: &ProcFacts) -> Option<&Registration> {
        self.0.iter().find(|r| r.selectors.matches(facts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ProcFacts {
        ProcFacts {
            pid: 1,
            start_time: 2,
            uid: 1000,
            gid: 100,
            exe: "/usr/bin/api".into(),
            exe_sha256: "ab".repeat(32),
            cgroup: "0::/a".into(),
            container_id: None,
        }
    }

    #[test]
    fn every_selector_must_match() {
        let r = Registrations::parse(
            "[[workload]]\nspiffe_id = \"spiffe://a.example/api\"\nselectors = { uid = 1000, exe = \"/usr/bin/api\" }\n",
        )
        .unwrap();
        assert_eq!(
            r.find(&facts()).unwrap().spiffe_id.to_string(),
            "spiffe://a.example/api"
        );
        assert!(r.find(&ProcFacts { uid: 0, ..facts() }).is_none());
        assert!(
            r.find(&ProcFacts {
                exe: "/tmp/api".into(),
                ..facts()
            })
            .is_none()
        );
        let c = Registrations::parse(
            "[[workload]]\nspiffe_id = \"spiffe://a.example/api\"\nselectors = { container_id = \"x\" }\n",
        )
        .unwrap();
        assert!(c.find(&facts()).is_none(), "no container is not a match");
    }

    #[test]
    fn problems_are_listed() {
        let e = Registrations::parse(
            "[[workload]]\nspiffe_id = \"spiffe://A/x\"\nselectors = { uid = 1 }\n[[workload]]\nspiffe_id = \"spiffe://a\"\nselectors = {}\n",
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            Registrations::parse(
                "[[workload]]\nspiffe_id = \"spiffe://a/x\"\nselectors = { pid = 1 }\n"
            )
            .is_err()
        );
    }
}
