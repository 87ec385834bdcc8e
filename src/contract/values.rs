//! Typed parameter values. Each is parsed once, at the edge, and cannot be invalid afterwards;
//! the parse error text is the "rule" half of a denial message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a raw string is not a valid value: the rule it breaks, phrased for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleViolation(pub String);

fn violation(msg: impl Into<String>) -> RuleViolation {
    RuleViolation(msg.into())
}

/// Case-insensitive boolean: `true` or `false`, nothing else.
pub fn parse_bool(raw: &str) -> Result<bool, RuleViolation> {
    let t = raw.trim();
    if t.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if t.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(violation("must be \"true\" or \"false\""))
    }
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

macro_rules! guid_type {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A GUID: ", $what, ".")]
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, RuleViolation> {
                let t = raw.trim();
                if is_guid(t) {
                    Ok(Self(t.to_ascii_lowercase()))
                } else {
                    Err(violation(concat!(
                        "must be a GUID such as 00000000-0000-0000-0000-000000000000 (",
                        $what,
                        ")"
                    )))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = RuleViolation;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

guid_type!(ClientId, "the Entra application (client) id");
guid_type!(TenantId, "the Entra tenant id");

/// Declares a closed, case-insensitive enumeration with its wire names.
macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(raw: &str) -> Result<Self, RuleViolation> {
                let t = raw.trim();
                $(if t.eq_ignore_ascii_case($text) { return Ok($name::$variant); })+
                Err(violation(format!(
                    "must be one of: {}",
                    [$($text),+].join(", ")
                )))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = RuleViolation;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

keyword_enum!(
    /// The Azure cloud: picks the authority host and the Service Bus DNS suffix.
    Cloud { Public => "public", China => "china", UsGov => "usgov" }
);

#[allow(clippy::derivable_impls)] // the macro cannot carry #[default]
impl Default for Cloud {
    fn default() -> Self {
        Cloud::Public
    }
}
keyword_enum!(
    /// How Service Bus traffic leaves the pod.
    Egress { Mesh => "mesh", Bypass => "bypass", None => "none" }
);
keyword_enum!(
    /// Extra env names for SDK conventions.
    EnvAlias { Sdk => "sdk", Dotnet => "dotnet", Spring => "spring" }
);
keyword_enum!(
    /// What a policy does when its rule matches.
    Policy { Deny => "deny", Warn => "warn", Off => "off" }
);
keyword_enum!(
    /// Who supplies the token volume and the Azure identity env: sbmesh (`inject`), or the
    /// Azure Workload Identity webhook (`delegate`).
    IdentityMode { Inject => "inject", Delegate => "delegate" }
);
keyword_enum!(
    /// The configured identity mode; `auto` follows the cluster (delegate while the Azure
    /// Workload Identity webhook is installed).
    IdentityModeSetting { Inject => "inject", Delegate => "delegate", Auto => "auto" }
);

keyword_enum!(
    /// Whether the pod gets the OpenTelemetry and Azure SDK tracing env (DESIGN §8).
    Telemetry { Off => "off", Otel => "otel" }
);

/// An OTLP exporter endpoint: an absolute `http://` or `https://` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(String);

impl OtlpEndpoint {
    pub fn parse(raw: &str) -> Result<Self, RuleViolation> {
        let t = raw.trim();
        let rule = || {
            violation(
                "must be an http:// or https:// URL with a host, such as \
                 http://otel-collector.observability:4317",
            )
        };
        // `http::Uri` is the URI parser the server stack already uses.
        let uri: http::Uri = t.parse().map_err(|_| rule())?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        let host_ok = uri.host().is_some_and(|h| !h.is_empty());
        if scheme_ok && host_ok && !t.chars().any(char::is_whitespace) {
            Ok(Self(t.to_string()))
        } else {
            Err(rule())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for OtlpEndpoint {
    type Err = RuleViolation;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for OtlpEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Cloud {
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com/",
            Cloud::China => "https://login.chinacloudapi.cn/",
            Cloud::UsGov => "https://login.microsoftonline.us/",
        }
    }
    /// The Service Bus domain, without a leading dot.
    pub fn servicebus_domain(self) -> &'static str {
        match self {
            Cloud::Public => "servicebus.windows.net",
            Cloud::China => "servicebus.chinacloudapi.cn",
            Cloud::UsGov => "servicebus.usgovcloudapi.net",
        }
    }
}

/// A Service Bus namespace, held as its short name; the FQDN follows from the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceBusNamespace {
    short: String,
}

impl ServiceBusNamespace {
    /// Accepts `payments` or `payments.<the cloud's Service Bus domain>`.
    pub fn parse(raw: &str, cloud: Cloud) -> Result<Self, RuleViolation> {
        let t = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let short = match t.split_once('.') {
            None => t.as_str(),
            Some((short, domain)) => {
                if domain == cloud.servicebus_domain() {
                    short
                } else if let Some(other) =
                    Cloud::ALL.iter().find(|c| c.servicebus_domain() == domain)
                {
                    return Err(violation(format!(
                        "is a namespace of the {other} cloud, but the cloud in effect is {cloud} \
                         (set sbmesh.io/cloud: {other}, or use a name ending in .{})",
                        cloud.servicebus_domain()
                    )));
                } else {
                    return Err(violation(format!(
                        "must be a short namespace name or a name ending in .{}",
                        cloud.servicebus_domain()
                    )));
                }
            }
        };
        let b = short.as_bytes();
        let ok = (6..=50).contains(&b.len())
            && b[0].is_ascii_alphabetic()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
        if !ok {
            return Err(violation(
                "a Service Bus namespace name has 6-50 characters: letters, digits and hyphens, \
                 starting with a letter and ending with a letter or digit",
            ));
        }
        Ok(Self {
            short: short.to_string(),
        })
    }
    pub fn short(&self) -> &str {
        &self.short
    }
    pub fn fqdn(&self, cloud: Cloud) -> String {
        format!("{}.{}", self.short, cloud.servicebus_domain())
    }
}

/// Which kind of Service Bus entity a name is for; the naming rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Queue,
    Topic,
    Subscription,
}

/// A queue, topic or subscription name that follows Service Bus naming rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityName(String);

impl EntityName {
    pub fn parse(raw: &str, kind: EntityKind) -> Result<Self, RuleViolation> {
        let t = raw.trim();
        let b = t.as_bytes();
        let (max, slash, rule) = match kind {
            EntityKind::Queue | EntityKind::Topic => (
                260,
                true,
                "has 1-260 characters: letters, digits, '.', '-', '_' and '/', starting and \
                 ending with a letter or digit",
            ),
            EntityKind::Subscription => (
                50,
                false,
                "has 1-50 characters: letters, digits, '.', '-' and '_', starting and ending \
                 with a letter or digit",
            ),
        };
        let ok = !b.is_empty()
            && b.len() <= max
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, b'.' | b'-' | b'_')
                    || (slash && *c == b'/')
            });
        if ok {
            Ok(Self(t.to_string()))
        } else {
            Err(violation(format!(
                "'{}' is not a valid name: a name {rule}",
                super::truncate(t)
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lifetime of the projected service-account token, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TokenExpiration(u32);

impl TokenExpiration {
    pub const MIN: u32 = 3600;
    pub const MAX: u32 = 86400;
    pub const DEFAULT: TokenExpiration = TokenExpiration(3600);

    pub fn parse(raw: &str) -> Result<Self, RuleViolation> {
        raw.trim()
            .parse::<u64>()
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .map_or_else(
                || {
                    Err(violation(
                        "must be a whole number of seconds from 3600 to 86400",
                    ))
                },
                Self::new,
            )
    }
    pub fn new(secs: u32) -> Result<Self, RuleViolation> {
        if (Self::MIN..=Self::MAX).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(violation(
                "must be a whole number of seconds from 3600 to 86400",
            ))
        }
    }
    pub fn seconds(self) -> u32 {
        self.0
    }
}

impl std::str::FromStr for TokenExpiration {
    type Err = RuleViolation;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Default for TokenExpiration {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl<'de> Deserialize<'de> for TokenExpiration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        Self::new(n).map_err(serde::de::Error::custom)
    }
}

/// A comma list: items trimmed, empty items dropped, duplicates removed keeping first order.
pub fn split_list(raw: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    // A set once the list is long: an annotation of 256 KiB may hold 100,000 items, and a
    // linear search per item would make that quadratic.
    let mut seen: Option<std::collections::HashSet<&str>> = None;
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let new = match &mut seen {
            Some(set) => set.insert(item),
            None if out.len() < 32 => !out.contains(&item),
            None => {
                let mut set: std::collections::HashSet<&str> = out.iter().copied().collect();
                let new = set.insert(item);
                seen = Some(set);
                new
            }
        };
        if new {
            out.push(item);
        }
    }
    out
}

/// A comma list of TCP ports 1-65535, in the order given, without duplicates.
pub fn parse_ports(raw: &str) -> Result<Vec<u16>, RuleViolation> {
    split_list(raw)
        .into_iter()
        .map(|p| {
            p.parse::<u16>().ok().filter(|n| *n != 0).ok_or_else(|| {
                violation(format!(
                    "'{}' is not a port: must be a comma list of ports 1-65535",
                    super::truncate(p)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|mut v| {
            let mut seen = std::collections::HashSet::new();
            v.retain(|p| seen.insert(*p));
            v
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_list_owned(raw: &str) -> Vec<String> {
        split_list(raw).into_iter().map(str::to_string).collect()
    }

    #[test]
    fn booleans_parse_case_insensitively_and_nothing_else() {
        assert_eq!(parse_bool("TRUE"), Ok(true));
        assert_eq!(parse_bool(" false "), Ok(false));
        assert!(parse_bool("yes").is_err());
        assert!(parse_bool("1").is_err());
        assert!(parse_bool("").is_err());
    }

    #[test]
    fn client_id_must_be_a_guid() {
        assert!(ClientId::parse("6f0c3a4e-2b9d-4c1e-8f7a-1d2e3f4a5b6c").is_ok());
        assert_eq!(
            ClientId::parse("6F0C3A4E-2B9D-4C1E-8F7A-1D2E3F4A5B6C")
                .unwrap()
                .as_str(),
            "6f0c3a4e-2b9d-4c1e-8f7a-1d2e3f4a5b6c"
        );
        for bad in [
            "",
            "abc",
            "6f0c3a4e2b9d4c1e8f7a1d2e3f4a5b6c",
            "{6f0c3a4e-2b9d-4c1e-8f7a-1d2e3f4a5b6c}",
            "6f0c3a4e-2b9d-4c1e-8f7a-1d2e3f4a5b6g",
        ] {
            assert!(ClientId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn servicebus_namespace_accepts_short_name_or_fqdn_of_the_cloud() {
        let ns = ServiceBusNamespace::parse("payments", Cloud::Public).unwrap();
        assert_eq!(ns.fqdn(Cloud::Public), "payments.servicebus.windows.net");
        let ns =
            ServiceBusNamespace::parse("Payments.servicebus.windows.net", Cloud::Public).unwrap();
        assert_eq!(ns.short(), "payments");
        let ns = ServiceBusNamespace::parse("payments.servicebus.chinacloudapi.cn", Cloud::China)
            .unwrap();
        assert_eq!(
            ns.fqdn(Cloud::China),
            "payments.servicebus.chinacloudapi.cn"
        );
    }

    #[test]
    fn servicebus_fqdn_of_another_cloud_is_refused() {
        let e = ServiceBusNamespace::parse("payments.servicebus.usgovcloudapi.net", Cloud::Public)
            .unwrap_err();
        assert!(e.0.contains("usgov"), "{e}");
        assert!(ServiceBusNamespace::parse("payments.example.com", Cloud::Public).is_err());
    }

    #[test]
    fn servicebus_short_name_follows_azure_rules() {
        for bad in [
            "short",
            "1payments",
            "payments-",
            "pay_ments",
            &"a".repeat(51),
        ] {
            assert!(
                ServiceBusNamespace::parse(bad, Cloud::Public).is_err(),
                "{bad}"
            );
        }
        assert!(ServiceBusNamespace::parse(&format!("a{}", "b".repeat(49)), Cloud::Public).is_ok());
        assert!(ServiceBusNamespace::parse("pay-01", Cloud::Public).is_ok());
    }

    #[test]
    fn entity_names_follow_servicebus_rules() {
        assert!(EntityName::parse("orders/v1.created_x", EntityKind::Queue).is_ok());
        assert!(EntityName::parse("orders/v1", EntityKind::Subscription).is_err());
        assert!(EntityName::parse("-orders", EntityKind::Topic).is_err());
        assert!(EntityName::parse("orders.", EntityKind::Topic).is_err());
        assert!(EntityName::parse(&"q".repeat(260), EntityKind::Queue).is_ok());
        assert!(EntityName::parse(&"q".repeat(261), EntityKind::Queue).is_err());
        assert!(EntityName::parse(&"s".repeat(51), EntityKind::Subscription).is_err());
    }

    #[test]
    fn token_expiration_is_bounded() {
        assert_eq!(TokenExpiration::parse("3600").unwrap().seconds(), 3600);
        assert_eq!(TokenExpiration::parse("86400").unwrap().seconds(), 86400);
        for bad in ["3599", "86401", "-1", "1h", "", "99999999999999999999"] {
            assert!(TokenExpiration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keywords_parse_case_insensitively() {
        assert_eq!(Cloud::parse("USGov"), Ok(Cloud::UsGov));
        assert_eq!(Egress::parse("BYPASS"), Ok(Egress::Bypass));
        let e = Egress::parse("sidecar").unwrap_err();
        assert!(e.0.contains("mesh, bypass, none"), "{e}");
    }

    #[test]
    fn lists_are_trimmed_deduplicated_and_keep_order() {
        assert_eq!(split_list(" b, a,,b , c,"), vec!["b", "a", "c"]);
        assert!(split_list(" , ").is_empty());
        // Past the short-list path: duplicates are still removed, first order kept.
        let long: Vec<String> = (0..100_000).map(|i| format!("q{}", i % 50_000)).collect();
        let items = split_list_owned(&long.join(","));
        assert_eq!(items.len(), 50_000);
        assert_eq!(items[..3], ["q0", "q1", "q2"]);
        assert_eq!(items[49_999], "q49999");
    }

    #[test]
    fn otlp_endpoint_is_an_http_or_https_url_with_a_host() {
        for good in [
            "http://otel-collector.observability:4317",
            "https://otlp.example.com",
            "http://10.0.0.1:4318/v1",
        ] {
            assert_eq!(OtlpEndpoint::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "otel-collector:4317",
            "grpc://collector:4317",
            "http://",
            "http:///path",
            "http://a b",
            "/v1/traces",
        ] {
            assert!(OtlpEndpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_must_be_in_range() {
        assert_eq!(parse_ports("15020, 5671,15020").unwrap(), vec![15020, 5671]);
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("65536").is_err());
        assert!(parse_ports("80-90").is_err());
    }
}
