//! Log and audit lines: one flat JSON object per event on stdout (SPEC §9), written
//! straight into the line buffer.
//!
//! The output is that of `tracing_subscriber`'s JSON format with `flatten_event(true)`:
//! `timestamp`, `level`, the event's fields in the order they were recorded, `target`.
//! That format collects each line through a `serde_json` serializer over an adaptor that
//! checks every fragment for UTF-8 again: an audit line cost about 5 µs of every request
//! there, one of the largest pieces of an attested exchange outside its cryptography and
//! the kernel (25 900 instructions; 14 900 here).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format of every line the broker logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(event.metadata().level().as_str())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        // A record bridged from the `log` crate carries its own target in a field; only
        // such a record (known by its callsite, not by the field's name) is filed under it.
        let normalized = event.normalized_metadata();
        let target = normalized
            .as_ref()
            .map_or_else(|| event.metadata().target(), |m| m.target());
        string(&mut writer, target)?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.out.write_char(',')?;
                string(self.out, field.name())?;
                self.out.write_char(':')?;
                value(self.out)
            })();
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| string(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes it; JSON has no NaN or infinity, and they become null.
        let text = serde_json::Number::from_f64(value).map(|n| n.to_string());
        self.entry(field, |w| w.write_str(text.as_deref().unwrap_or("null")));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `s` as a JSON string.
fn string(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string (RFC 8259 §7): `"`,
/// `\` and the control characters; everything else as it is, in runs.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..0x20 => "",
                _ => continue,
            };
            self.0.write_str(s.get(start..i).unwrap_or_default())?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(s.get(start..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// Runs `events` once under tracing_subscriber's flattened JSON format and once
    /// under [`FlatJson`], and returns both outputs, line by line.
    fn both(events: impl Fn()) -> (Vec<String>, Vec<String>) {
        let theirs = Buffer::default();
        let sub = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(theirs.clone())
            .finish();
        tracing::subscriber::with_default(sub, &events);
        let ours = Buffer::default();
        let sub = tracing_subscriber::fmt()
            .event_format(FlatJson)
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(sub, &events);
        (theirs.lines(), ours.lines())
    }

    /// Member names in order, and values, with the timestamp's value left out.
    fn shape(line: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let v: serde_json::Map<String, Value> = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        for (k, v) in v {
            out.push((k.clone(), if k == "timestamp" { Value::Null } else { v }));
        }
        out
    }

    #[test]
    fn lines_are_what_the_flattened_json_format_writes() {
        let (theirs, ours) = both(|| {
            let absent: Option<&str> = None;
            tracing::info!(
                target: "audit",
                event = "token_exchange",
                decision = "deny",
                reason = "invalid_grant",
                detail = "quote \" backslash \\ newline \n tab \t cr \r nul \u{0} bell \u{7} del \u{7f} é ✓ 😀",
                subject = absent,
                latency_us = 42_u64,
                delta = -7_i64,
                ok = true,
                share = 0.25_f64,
                nan = f64::NAN,
                inf = f64::INFINITY,
                shown = %"display \"x\"",
                debugged = ?vec!["a\u{1}", "b"],
            );
            tracing::warn!(error = %io::Error::other("disk \"full\""), "key maintenance failed: {}", 3);
            tracing::error!("");
            tracing::info!(n = u64::MAX, m = i64::MIN, "edges");
        });
        assert_eq!(theirs.len(), 4, "{theirs:?}");
        assert_eq!(ours.len(), theirs.len(), "{ours:?}");
        for (t, o) in theirs.iter().zip(&ours) {
            assert_eq!(shape(o), shape(t), "\nours:   {o}\ntheirs: {t}");
        }
        // The same member order, not only the same members (serde_json's Map sorts, so
        // check the text).
        let order = |l: &str| {
            let keys = [
                "\"timestamp\"",
                "\"level\"",
                "\"event\"",
                "\"latency_us\"",
                "\"target\"",
            ];
            keys.iter().map(|k| l.find(k)).collect::<Vec<_>>()
        };
        assert_eq!(order(&ours[0]), order(&theirs[0]));
        // Every byte below 0x20 escaped, so one event is one line.
        assert!(ours[0].contains("nul \\u0000 bell \\u0007"), "{}", ours[0]);
    }

    #[test]
    fn every_control_character_is_escaped() {
        let all: String = (0u8..0x20).map(char::from).collect();
        let mut out = String::new();
        string(&mut out, &all).unwrap();
        assert!(out.bytes().all(|b| b >= 0x20), "{out}");
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, all);
        let mut out = String::new();
        string(&mut out, "plain, no escapes é").unwrap();
        assert_eq!(out, "\"plain, no escapes é\"");
    }

    #[test]
    fn a_bridged_log_record_is_filed_under_its_own_target() {
        let (theirs, ours) = both(|| {
            let record = log::Record::builder()
                .target("rustls::server")
                .level(log::Level::Warn)
                .args(format_args!("from log"))
                .module_path_static(Some("rustls::server::hs"))
                .file_static(Some("hs.rs"))
                .line(Some(7))
                .build();
            tracing_log::format_trace(&record).unwrap();
            // A field of that name on a native event is only a field.
            tracing::info!(target: "broker", { log.target = "audit" }, "native");
        });
        assert_eq!(theirs.len(), 2, "{theirs:?}");
        for (t, o) in theirs.iter().zip(&ours) {
            assert_eq!(shape(o), shape(t), "\nours:   {o}\ntheirs: {t}");
        }
        let bridged: Value = serde_json::from_str(&ours[0]).unwrap();
        assert_eq!(bridged["target"], "rustls::server");
        let native: Value = serde_json::from_str(&ours[1]).unwrap();
        assert_eq!(native["target"], "broker");
    }
}
