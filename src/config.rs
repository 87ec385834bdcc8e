//! Settings: built-in defaults, then the YAML config file, then environment variables and
//! flags (clap merges those two). Validated once, at start; afterwards every value is typed.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::contract::boundary::{self, Key, Patterns};
use crate::contract::{
    ClientId, Cloud, Defaults, Egress, IdentityModeSetting, OtlpEndpoint, Policy,
    ServiceBusNamespace, Telemetry, TenantId, TokenExpiration, values::parse_ports,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{what} is invalid: {message}")]
    Invalid { what: &'static str, message: String },
}

/// The config file (`--config`, YAML). Unknown keys are errors, so typos surface at start.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub tenant_id: Option<TenantId>,
    pub client_id: Option<ClientId>,
    pub servicebus_namespace: Option<String>,
    pub cloud: Option<Cloud>,
    pub egress: Option<Egress>,
    pub identity_mode: Option<IdentityModeSetting>,
    pub connection_string_policy: Option<Policy>,
    pub require_dedicated_service_account: Option<Policy>,
    pub native_sidecar: Option<bool>,
    pub mesh_exclude_outbound_ports: Option<Vec<u16>>,
    pub token_expiration: Option<TokenExpiration>,
    pub telemetry: Option<Telemetry>,
    pub otlp_endpoint: Option<OtlpEndpoint>,
    pub require_boundaries: Option<bool>,
    pub boundaries: Option<FileBoundaries>,
}

/// The config file's `boundaries`: lists of patterns for Namespaces that set none of their
/// own. An absent key bounds nothing; an empty list allows nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileBoundaries {
    pub allowed_servicebus_namespaces: Option<Vec<String>>,
    pub allowed_entities: Option<Vec<String>>,
    pub allowed_client_ids: Option<Vec<String>>,
}

impl FileBoundaries {
    fn parse(&self) -> Result<boundary::Defaults, ConfigError> {
        let parse = |key: Key, items: &Option<Vec<String>>| {
            items
                .as_deref()
                .map(|items| Patterns::parse_config(key, items))
                .transpose()
                .map_err(|e| ConfigError::Invalid {
                    what: key.config_key(),
                    message: e.0,
                })
        };
        Ok(boundary::Defaults {
            servicebus_namespaces: parse(
                Key::ServicebusNamespaces,
                &self.allowed_servicebus_namespaces,
            )?,
            entities: parse(Key::Entities, &self.allowed_entities)?,
            client_ids: parse(Key::ClientIds, &self.allowed_client_ids)?,
        })
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Injection parameters shared by `serve` and `inject`: every flag is also an `SBMESH_*`
/// environment variable, and both override the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ParamArgs {
    /// YAML config file (keys: tenantId, clientId, servicebusNamespace, cloud, egress,
    /// identityMode, connectionStringPolicy, requireDedicatedServiceAccount, nativeSidecar,
    /// meshExcludeOutboundPorts, tokenExpiration, telemetry, otlpEndpoint, requireBoundaries,
    /// boundaries.allowedServicebusNamespaces, boundaries.allowedEntities,
    /// boundaries.allowedClientIds).
    #[arg(long, env = "SBMESH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Default Entra tenant id (GUID).
    #[arg(long, env = "SBMESH_TENANT_ID", value_name = "GUID")]
    pub tenant_id: Option<TenantId>,
    /// Default Entra application (client) id (GUID).
    #[arg(long, env = "SBMESH_CLIENT_ID", value_name = "GUID")]
    pub client_id: Option<ClientId>,
    /// Default Service Bus namespace: short name or FQDN.
    #[arg(long, env = "SBMESH_SERVICEBUS_NAMESPACE", value_name = "NAME")]
    pub servicebus_namespace: Option<String>,
    /// Default Azure cloud: public, china or usgov.
    #[arg(long, env = "SBMESH_CLOUD", value_name = "CLOUD")]
    pub cloud: Option<Cloud>,
    /// Default egress: mesh, bypass or none.
    #[arg(long, env = "SBMESH_EGRESS", value_name = "MODE")]
    pub egress: Option<Egress>,
    /// Identity mode: inject, delegate, or auto (delegate while the Azure Workload Identity
    /// webhook is installed; needs cluster lookups).
    #[arg(long, env = "SBMESH_IDENTITY_MODE", value_name = "MODE")]
    pub identity_mode: Option<IdentityModeSetting>,
    /// Plaintext Service Bus connection strings in env values: deny, warn or off.
    #[arg(long, env = "SBMESH_CONNECTION_STRING_POLICY", value_name = "POLICY")]
    pub connection_string_policy: Option<Policy>,
    /// Pods on the `default` ServiceAccount: warn, deny or off.
    #[arg(
        long,
        env = "SBMESH_REQUIRE_DEDICATED_SERVICE_ACCOUNT",
        value_name = "POLICY"
    )]
    pub require_dedicated_service_account: Option<Policy>,
    /// Add `sidecar.istio.io/nativeSidecar: "true"`.
    #[arg(long, env = "SBMESH_NATIVE_SIDECAR", value_name = "BOOL")]
    pub native_sidecar: Option<bool>,
    /// The mesh's default excludeOutboundPorts, merged into the pod's in bypass mode.
    #[arg(long, env = "SBMESH_MESH_EXCLUDE_OUTBOUND_PORTS", value_name = "PORTS")]
    pub mesh_exclude_outbound_ports: Option<String>,
    /// Default projected token lifetime in seconds (3600-86400).
    #[arg(long, env = "SBMESH_TOKEN_EXPIRATION", value_name = "SECONDS")]
    pub token_expiration: Option<TokenExpiration>,
    /// Default telemetry: off, or otel (OpenTelemetry and Azure SDK tracing env).
    #[arg(long, env = "SBMESH_TELEMETRY", value_name = "MODE")]
    pub telemetry: Option<Telemetry>,
    /// Default OTLP exporter endpoint (http:// or https:// URL) for pods with telemetry otel.
    #[arg(long, env = "SBMESH_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<OtlpEndpoint>,
    /// Refuse pods whose Namespace has no Service Bus namespace boundary (its own annotation
    /// or boundaries.allowedServicebusNamespaces in the config).
    #[arg(long, env = "SBMESH_REQUIRE_BOUNDARIES", value_name = "BOOL")]
    pub require_boundaries: Option<bool>,
}

/// Validated parameters: the contract's defaults and the identity mode setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub defaults: Defaults,
    pub identity_mode: IdentityModeSetting,
}

impl ParamArgs {
    /// Merges defaults, the config file and flags/env, and validates the result.
    pub fn resolve(&self) -> Result<Params, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let base = Defaults::default();
        let mesh_exclude_outbound_ports = match &self.mesh_exclude_outbound_ports {
            Some(raw) => parse_ports(raw).map_err(|e| ConfigError::Invalid {
                what: "--mesh-exclude-outbound-ports",
                message: e.0,
            })?,
            None => {
                let ports = file.mesh_exclude_outbound_ports.unwrap_or_default();
                if ports.contains(&0) {
                    return Err(ConfigError::Invalid {
                        what: "meshExcludeOutboundPorts",
                        message: "ports are 1-65535".into(),
                    });
                }
                ports
            }
        };
        let defaults = Defaults {
            client_id: self.client_id.clone().or(file.client_id),
            tenant_id: self.tenant_id.clone().or(file.tenant_id),
            servicebus_namespace: self
                .servicebus_namespace
                .clone()
                .or(file.servicebus_namespace),
            cloud: self.cloud.or(file.cloud).unwrap_or(base.cloud),
            egress: self.egress.or(file.egress).unwrap_or(base.egress),
            token_expiration: self
                .token_expiration
                .or(file.token_expiration)
                .unwrap_or(base.token_expiration),
            connection_string_policy: self
                .connection_string_policy
                .or(file.connection_string_policy)
                .unwrap_or(base.connection_string_policy),
            require_dedicated_service_account: self
                .require_dedicated_service_account
                .or(file.require_dedicated_service_account)
                .unwrap_or(base.require_dedicated_service_account),
            native_sidecar: self
                .native_sidecar
                .or(file.native_sidecar)
                .unwrap_or(base.native_sidecar),
            mesh_exclude_outbound_ports,
            telemetry: self.telemetry.or(file.telemetry).unwrap_or(base.telemetry),
            otlp_endpoint: self.otlp_endpoint.clone().or(file.otlp_endpoint),
            boundaries: match &file.boundaries {
                Some(b) => b.parse()?,
                None => base.boundaries,
            },
            require_boundaries: self
                .require_boundaries
                .or(file.require_boundaries)
                .unwrap_or(base.require_boundaries),
        };
        if let Some(ns) = &defaults.servicebus_namespace {
            ServiceBusNamespace::parse(ns, defaults.cloud).map_err(|e| ConfigError::Invalid {
                what: "servicebusNamespace (--servicebus-namespace)",
                message: format!("\"{ns}\" {}", e.0),
            })?;
        }
        Ok(Params {
            defaults,
            identity_mode: self
                .identity_mode
                .or(file.identity_mode)
                .unwrap_or(IdentityModeSetting::Inject),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yaml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let (_d, p) = file(
            "tenantId: 11111111-1111-1111-1111-111111111111\ncloud: china\negress: bypass\n\
             meshExcludeOutboundPorts: [15020]\nservicebusNamespace: payments\n",
        );
        let args = ParamArgs {
            config: Some(p),
            egress: Some(Egress::None),
            ..Default::default()
        };
        let params = args.resolve().unwrap();
        assert_eq!(params.defaults.cloud, Cloud::China);
        assert_eq!(params.defaults.egress, Egress::None);
        assert_eq!(params.defaults.mesh_exclude_outbound_ports, vec![15020]);
        assert_eq!(
            params.defaults.tenant_id.unwrap().as_str(),
            "11111111-1111-1111-1111-111111111111"
        );
        assert_eq!(params.defaults.connection_string_policy, Policy::Deny);
        assert_eq!(params.identity_mode, IdentityModeSetting::Inject);
    }

    #[test]
    fn boundaries_and_telemetry_come_from_the_file_and_flags() {
        let (_d, p) = file(
            "telemetry: otel\notlpEndpoint: http://collector:4317\nrequireBoundaries: true\n\
             boundaries:\n  allowedServicebusNamespaces: [payments-*]\n  allowedEntities: []\n",
        );
        let params = ParamArgs {
            config: Some(p.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let d = &params.defaults;
        assert_eq!(d.telemetry, Telemetry::Otel);
        assert_eq!(
            d.otlp_endpoint.as_ref().unwrap().as_str(),
            "http://collector:4317"
        );
        assert!(d.require_boundaries);
        assert!(d.boundaries.servicebus_namespaces.is_some());
        // An empty list is set (it allows nothing); an absent key is not.
        assert!(d.boundaries.entities.is_some());
        assert!(d.boundaries.client_ids.is_none());
        let flags = ParamArgs {
            config: Some(p),
            telemetry: Some(Telemetry::Off),
            require_boundaries: Some(false),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(flags.defaults.telemetry, Telemetry::Off);
        assert!(!flags.defaults.require_boundaries);
    }

    #[test]
    fn boundary_config_that_does_not_parse_is_an_error_naming_the_key() {
        for (text, key) in [
            (
                "boundaries:\n  allowedEntities: [orders]\n",
                "boundaries.allowedEntities",
            ),
            (
                "boundaries:\n  allowedClientIds: [\"6f0c*\"]\n",
                "boundaries.allowedClientIds",
            ),
            (
                "boundaries:\n  allowedServicebusNamespaces: [\"pay ments\"]\n",
                "boundaries.allowedServicebusNamespaces",
            ),
            ("boundaries:\n  allowedQueues: [x]\n", "allowedQueues"),
            ("otlpEndpoint: collector:4317\n", "otlpEndpoint"),
        ] {
            let (_d, p) = file(text);
            let e = ParamArgs {
                config: Some(p),
                ..Default::default()
            }
            .resolve()
            .unwrap_err()
            .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn unknown_config_keys_are_errors() {
        let (_d, p) = file("tenantID: x\n");
        let e = ParamArgs {
            config: Some(p),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains("tenantID"), "{e}");
    }

    #[test]
    fn invalid_config_values_are_errors_at_start() {
        for bad in [
            "tenantId: not-a-guid\n",
            "cloud: mars\n",
            "tokenExpiration: 60\n",
        ] {
            let (_d, p) = file(bad);
            assert!(
                ParamArgs {
                    config: Some(p),
                    ..Default::default()
                }
                .resolve()
                .is_err(),
                "{bad}"
            );
        }
        let e = ParamArgs {
            servicebus_namespace: Some("payments.servicebus.windows.net".into()),
            cloud: Some(Cloud::UsGov),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains("servicebusNamespace"), "{e}");
    }

    #[test]
    fn settings_named_in_messages_are_real_config_keys_and_flags() {
        use crate::contract::keys::settings;
        use clap::CommandFactory as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            params: ParamArgs,
        }
        let command = Cli::command();
        // What the loader says of a key it does not know.
        let (_d, p) = file("servicebusNamespac: \"\"\n");
        let unknown = FileConfig::load(&p)
            .expect_err("an unknown key")
            .to_string();
        assert!(unknown.contains("unknown field"), "{unknown}");
        for s in settings::ALL {
            // A key the file does not know is an error; any other error is about the value.
            let (_d, p) = file(&format!("{}: \"\"\n", s.key));
            let e = FileConfig::load(&p)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!e.contains("unknown field"), "{}: {e}", s.key);
            let long = s.flag.trim_start_matches("--");
            assert!(
                command.get_arguments().any(|a| a.get_long() == Some(long)),
                "{} has no flag {}",
                s.key,
                s.flag
            );
        }
    }
}
