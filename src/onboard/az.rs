//! `-o az` (DESIGN §9): a bash script that creates, with the Azure CLI, the federated
//! credentials and role assignments the plan needs and that are missing. Safe to run twice.
//!
//! The script is the same for every plan: a few bash functions that find, compare and create,
//! then the plan as calls to them whose arguments (issuer, client ids, subjects, credential
//! names, bus names, scopes) are data, each quoted for the shell with `shlex`. It finds every
//! identity and every Service Bus namespace before it creates anything.

use std::fmt::Write as _;

use super::plan::{Bus, Onboarding, ServiceAccount};

/// The audience of every federated credential for workload identity.
pub const AUDIENCE: &str = "api://AzureADTokenExchange";

/// The longest federated identity credential name Entra ID accepts.
pub const MAX_CREDENTIAL_NAME: usize = 120;

/// The name of the federated credential for `service_account` on a cluster:
/// `sbmesh-<cluster>-<namespace>-<name>`, each character other than an ASCII letter, digit,
/// `-` or `_` replaced by `-`; past 120 characters, the first 111, `-` and the first 8 hex
/// digits of the SHA-256 of the whole (sanitized) name.
pub fn credential_name(cluster: &str, service_account: &ServiceAccount) -> String {
    let raw = format!(
        "sbmesh-{cluster}-{}-{}",
        service_account.namespace, service_account.name
    );
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.len() <= MAX_CREDENTIAL_NAME {
        return name;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Sanitized, the name is ASCII: byte and character counts agree.
    format!("{}-{hex}", &name[..MAX_CREDENTIAL_NAME - 9])
}

/// `value` as one shell word. Bash cannot hold a NUL, so a value with one is an error.
fn quote(what: &str, value: &str) -> Result<String, String> {
    shlex::try_quote(value)
        .map(|q| q.into_owned())
        .map_err(|_| {
            format!(
                "cannot write the az script: {what} \"{}\" holds a NUL character",
                crate::contract::truncate(&value.replace('\0', "\\0"))
            )
        })
}

/// The script. `issuer` is the cluster's service account issuer; `cluster` goes into the
/// federated credentials' names.
pub fn render(onboarding: &Onboarding, issuer: &str, cluster: &str) -> Result<String, String> {
    let mut out = String::new();
    out.push_str(&HEADER.replace("{version}", env!("CARGO_PKG_VERSION")));
    if onboarding.identities.is_empty() {
        out.push_str(
            "\necho 'sbmesh onboard: no workload opts in, so there is nothing to create.'\n",
        );
        return Ok(out);
    }

    let _ = writeln!(out, "\nreadonly ISSUER={}", quote("the issuer", issuer)?);
    let _ = writeln!(
        out,
        "readonly AUDIENCE={}",
        quote("the audience", AUDIENCE)?
    );
    out.push_str(FUNCTIONS);

    // Each bus once, by name (how az finds it; Azure compares names case-insensitively).
    let mut buses: Vec<&Bus> = Vec::new();
    for g in onboarding.identities.iter().flat_map(|i| &i.grants) {
        if !buses
            .iter()
            .any(|b| b.name.eq_ignore_ascii_case(&g.bus.name))
        {
            buses.push(&g.bus);
        }
    }
    let bus_number = |bus: &Bus| {
        1 + buses
            .iter()
            .position(|b| b.name.eq_ignore_ascii_case(&bus.name))
            .expect("every grant's bus is listed")
    };

    out.push_str(
        "\n# 1. Find every identity and Service Bus namespace: nothing is created if one is \
         missing.\n",
    );
    for (n, identity) in onboarding.identities.iter().enumerate() {
        let _ = writeln!(
            out,
            "find_identity {} {} {}",
            n + 1,
            quote("a client id", &identity.client_id)?,
            quote(
                "a tenant id",
                identity.tenant_id.as_deref().unwrap_or_default()
            )?
        );
    }
    for (n, bus) in buses.iter().enumerate() {
        let _ = writeln!(
            out,
            "find_bus {} {}",
            n + 1,
            quote("a Service Bus namespace", &bus.name)?
        );
    }

    out.push_str("\n# 2. Create what is missing, identity by identity, one write at a time.\n");
    for (n, identity) in onboarding.identities.iter().enumerate() {
        let mut names: Vec<(String, &ServiceAccount)> = Vec::new();
        for sa in &identity.service_accounts {
            let name = credential_name(cluster, sa);
            // `a-b`/`c` and `a`/`b-c` make one name: the second would meet the first's
            // credential at run time, as if another cluster had it.
            if let Some((_, other)) = names.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                return Err(format!(
                    "cannot write the az script: ServiceAccounts {other} and {sa} share client id                      {} and would both get federated credential {name}; give each ServiceAccount                      its own identity",
                    identity.client_id
                ));
            }
            names.push((name.clone(), sa));
            let subject = sa.subject();
            let parameters = serde_json::json!({
                "name": name,
                "issuer": issuer,
                "subject": subject,
                "audiences": [AUDIENCE],
            })
            .to_string();
            let _ = writeln!(
                out,
                "federated_credential {} {} {} {}",
                n + 1,
                quote("a credential name", &name)?,
                quote("a subject", &subject)?,
                quote("a credential", &parameters)?
            );
        }
        for g in &identity.grants {
            let _ = writeln!(
                out,
                "role_assignment {} {} {} {} {}",
                n + 1,
                bus_number(&g.bus),
                quote("a scope", &g.scope(""))?,
                g.role.id(),
                quote("a role", g.role.name())?
            );
        }
    }
    Ok(out)
}

const HEADER: &str = r#"#!/usr/bin/env bash
# Generated by sbmesh {version} (sbmesh onboard -o az). Render it again rather than edit it.
#
# For each Entra identity the workloads use, it creates with the Azure CLI what is missing:
#   - a federated identity credential for each of the identity's ServiceAccounts, trusting
#     the cluster's service account issuer (ISSUER);
#   - an Azure Service Bus Data Sender or Data Receiver role assignment on each queue, topic
#     or topic subscription the workloads send to or receive from, at that entity's scope.
# It first finds every identity (a user-assigned managed identity in the current
# subscription, else an app registration) and every Service Bus namespace, and creates
# nothing if one is missing or az is logged in to another tenant.
#
# Needs az, logged in to the identities' tenant (az login --tenant TENANT) with the
# subscription of the managed identities and Service Bus namespaces selected (az account set
# --subscription SUBSCRIPTION), and the rights to
#   - create role assignments on the Service Bus namespaces: Owner, User Access
#     Administrator or Role Based Access Control Administrator;
#   - add federated credentials: Managed Identity Contributor on the managed identities,
#     Application owner of the app registrations.
#
# Safe to run twice: what exists is left as it is and reported as "present". It prints one
# line per action.
#
# The values in the calls at the end are data: a $ or ` in one is literal.
# shellcheck disable=SC2016
set -euo pipefail
"#;

const FUNCTIONS: &str = r#"
AZ_ERR=$(mktemp)
trap 'rm -f "$AZ_ERR"' EXIT
AZ_OUT=
TENANT=
UAMIS_LISTED=no
UAMIS=
BUSES_LISTED=no
BUSES=

die() {
  printf 'error: %s\n' "$1" >&2
  exit 1
}

# same_text A B: whether A and B are equal ignoring case, as GUIDs and ARM ids compare.
same_text() {
  local same=1
  shopt -s nocasematch
  if [[ $1 == "$2" ]]; then
    same=0
  fi
  shopt -u nocasematch
  return "$same"
}

# az_get ARG...: runs az and puts what it prints in AZ_OUT. Returns 3 when az says the object
# does not exist (its exit code 3); stops the script on any other failure, with az's error.
az_get() {
  local code=0
  AZ_OUT=$(az "$@" 2>"$AZ_ERR") || code=$?
  if [ "$code" = 3 ]; then
    return 3
  fi
  cat "$AZ_ERR" >&2
  if [ "$code" != 0 ]; then
    die "az $1 $2 $3 failed (exit code $code)"
  fi
}

# subscription: the current subscription's id, for messages.
subscription() {
  az account show --query id -o tsv 2>/dev/null || printf '(none: az account show failed)'
}

# read_tenant: puts the tenant az is logged in to in TENANT.
read_tenant() {
  if [ -z "$TENANT" ]; then
    az_get account show --query tenantId -o tsv || die "az account show: not logged in (az login)"
    TENANT=$AZ_OUT
  fi
}

# find_identity N CLIENT_ID TENANT_ID: finds the identity with CLIENT_ID, a user-assigned
# managed identity in the current subscription, else an app registration, as identity N.
# An empty TENANT_ID (delegate mode) skips the tenant check.
find_identity() {
  local n=$1 client_id=$2 tenant_id=$3 id_client id_name id_group id_principal display
  if [ -n "$tenant_id" ]; then
    read_tenant
    if ! same_text "$TENANT" "$tenant_id"; then
      die "client id $client_id is in tenant $tenant_id, but az is logged in to tenant $TENANT: run az login --tenant $tenant_id, then this script again"
    fi
  fi
  if [ "$UAMIS_LISTED" = no ]; then
    az_get identity list --query '[].[clientId, name, resourceGroup, principalId]' -o tsv ||
      die "az identity list found nothing"
    UAMIS=$AZ_OUT
    UAMIS_LISTED=yes
  fi
  ID_CLIENT[n]=$client_id
  while IFS=$'\t' read -r id_client id_name id_group id_principal; do
    if same_text "$id_client" "$client_id"; then
      ID_KIND[n]=uami
      ID_NAME[n]=$id_name
      ID_GROUP[n]=$id_group
      ID_PRINCIPAL[n]=$id_principal
      ID_LABEL[n]="managed identity $id_name"
      return 0
    fi
  done <<<"$UAMIS"
  if ! az_get ad app show --id "$client_id" --query displayName -o tsv; then
    read_tenant
    die "no identity has client id $client_id: no user-assigned managed identity in subscription $(subscription), no app registration in tenant $TENANT. Create it, or point az at where it is: az account set --subscription SUBSCRIPTION (managed identity), az login --tenant TENANT (app registration)"
  fi
  display=${AZ_OUT:-$client_id}
  ID_KIND[n]=app
  ID_LABEL[n]="app registration $display"
  if ! az_get ad sp show --id "$client_id" --query id -o tsv; then
    die "app registration $display (client id $client_id) has no service principal in this tenant, so it cannot be granted a role: create one with az ad sp create --id $client_id"
  fi
  ID_PRINCIPAL[n]=$AZ_OUT
}

# find_bus N NAME: finds the Service Bus namespace NAME in the current subscription, as bus N.
find_bus() {
  local n=$1 name=$2 bus_name bus_id
  if [ "$BUSES_LISTED" = no ]; then
    az_get servicebus namespace list --query '[].[name, id]' -o tsv ||
      die "az servicebus namespace list found nothing"
    BUSES=$AZ_OUT
    BUSES_LISTED=yes
  fi
  while IFS=$'\t' read -r bus_name bus_id; do
    if same_text "$bus_name" "$name"; then
      BUS_ID[n]=$bus_id
      return 0
    fi
  done <<<"$BUSES"
  die "no Service Bus namespace named $name in subscription $(subscription): select the subscription that holds it (az account set --subscription SUBSCRIPTION), or create the namespace"
}

# federated_credential N NAME SUBJECT CREDENTIAL: adds to identity N the federated credential
# NAME that trusts ISSUER for SUBJECT, unless one with that issuer and subject is there, under
# any name. CREDENTIAL is the same credential in JSON, for an app registration.
federated_credential() {
  local n=$1 name=$2 subject=$3 credential=$4 existing fic_name fic_issuer fic_subject
  if [ "${ID_KIND[n]}" = uami ]; then
    az_get identity federated-credential list --identity-name "${ID_NAME[n]}" \
      --resource-group "${ID_GROUP[n]}" --query '[].[name, issuer, subject]' -o tsv ||
      die "${ID_LABEL[n]} is gone"
  else
    az_get ad app federated-credential list --id "${ID_CLIENT[n]}" \
      --query '[].[name, issuer, subject]' -o tsv || die "${ID_LABEL[n]} is gone"
  fi
  existing=$AZ_OUT
  while IFS=$'\t' read -r fic_name fic_issuer fic_subject; do
    if [ "$fic_issuer" = "$ISSUER" ] && [ "$fic_subject" = "$subject" ]; then
      printf 'present: federated credential for %s on %s (%s)\n' "$subject" "${ID_LABEL[n]}" "$fic_name"
      return 0
    fi
  done <<<"$existing"
  while IFS=$'\t' read -r fic_name fic_issuer fic_subject; do
    if same_text "$fic_name" "$name"; then
      die "federated credential $fic_name on ${ID_LABEL[n]} trusts issuer $fic_issuer for subject $fic_subject, not $ISSUER for $subject; it is left as it is. Is another cluster onboarded under the same --cluster-name? Render this script again with a --cluster-name of this cluster's own"
    fi
  done <<<"$existing"
  if [ "${ID_KIND[n]}" = uami ]; then
    az identity federated-credential create --name "$name" --identity-name "${ID_NAME[n]}" \
      --resource-group "${ID_GROUP[n]}" --issuer "$ISSUER" --subject "$subject" \
      --audiences "$AUDIENCE" --output none ||
      die "could not create federated credential $name on ${ID_LABEL[n]}"
  else
    az ad app federated-credential create --id "${ID_CLIENT[n]}" --parameters "$credential" \
      --output none || die "could not create federated credential $name on ${ID_LABEL[n]}"
  fi
  printf 'created federated credential %s on %s (%s)\n' "$name" "${ID_LABEL[n]}" "$subject"
}

# role_assignment N BUS ENTITY ROLE_ID ROLE: gives identity N the role ROLE_ID (named ROLE) at
# the scope ENTITY under bus BUS, unless it has that role at that scope (ignoring case). The
# identity's assignments in the subscription are read once.
role_assignment() {
  local n=$1 scope="${BUS_ID[$2]}$3" role_id=$4 role=$5 definition existing
  if [ "${ID_ASSIGNMENTS_READ[n]:-no}" = no ]; then
    az_get role assignment list --all --assignee "${ID_PRINCIPAL[n]}" \
      --query '[].[roleDefinitionId, scope]' -o tsv || die "az role assignment list found nothing"
    ID_ASSIGNMENTS[n]=$AZ_OUT
    ID_ASSIGNMENTS_READ[n]=yes
  fi
  while IFS=$'\t' read -r definition existing; do
    if same_text "${definition##*/}" "$role_id" && same_text "$existing" "$scope"; then
      printf 'present: role assignment %s on %s for %s\n' "$role" "$scope" "${ID_LABEL[n]}"
      return 0
    fi
  done <<<"${ID_ASSIGNMENTS[n]}"
  az role assignment create --role "$role_id" --scope "$scope" \
    --assignee-object-id "${ID_PRINCIPAL[n]}" --assignee-principal-type ServicePrincipal \
    --output none ||
    die "could not create role assignment $role on $scope for ${ID_LABEL[n]} (the queue, topic or subscription must exist)"
  printf 'created role assignment %s on %s for %s\n' "$role" "$scope" "${ID_LABEL[n]}"
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::access::{Access, Direction, Entity};
    use crate::onboard::plan::Workload;

    fn sa(namespace: &str, name: &str) -> ServiceAccount {
        ServiceAccount {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn workload(namespace: &str, account: &str, bus: &str, sends: &[&str]) -> Workload {
        Workload {
            reference: format!("{namespace}/Deployment/{account}"),
            service_account: sa(namespace, account),
            client_id: "3c1e7f4a-9b2d-4e8f-a6c5-0d1b2e3f4a51".into(),
            tenant_id: Some("5d2e8c1a-7b3f-4a9e-b6d4-c0f1e2a3b4c5".into()),
            bus: Bus {
                name: bus.into(),
                fqdn: format!("{bus}.servicebus.windows.net"),
            },
            access: Access::new(
                sends
                    .iter()
                    .map(|s| Entity::parse(s, Direction::Send).unwrap())
                    .collect(),
                vec![],
            ),
        }
    }

    /// What bash makes of `word`: the value it was quoted from, if the quoting is right.
    fn bash_reads(word: &str) -> String {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("printf '%s' {word}"))
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "{word}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn credential_names_keep_letters_digits_dash_and_underscore() {
        assert_eq!(
            credential_name("prod", &sa("payments", "orders")),
            "sbmesh-prod-payments-orders"
        );
        assert_eq!(
            credential_name("prod_EU 2/b.c", &sa("pay-ments", "orders.v1")),
            "sbmesh-prod_EU-2-b-c-pay-ments-orders-v1"
        );
        // One character becomes one dash, whatever its UTF-8 length.
        assert_eq!(
            credential_name("zürich'$(x)", &sa("a", "b")),
            "sbmesh-z-rich---x--a-b"
        );
    }

    #[test]
    fn credential_names_past_120_characters_are_cut_with_a_hash() {
        // "sbmesh-" + 7 + "-" + ns + "-" + "orders" = 22 + ns: exactly 120 is kept as is.
        let ns = "n".repeat(98);
        let name = credential_name("cluster", &sa(&ns, "orders"));
        assert_eq!(name, format!("sbmesh-cluster-{ns}-orders"));
        assert_eq!(name.len(), 120);

        // 121: cut to 111 + '-' + sha256 prefix. The hash was computed with
        // `printf '%s' "sbmesh-cluster-$(printf 'n%.0s' {1..99})-orders" | sha256sum`.
        let ns = "n".repeat(99);
        let name = credential_name("cluster", &sa(&ns, "orders"));
        let expected = format!("{}-175bfefc", &format!("sbmesh-cluster-{ns}")[..111]);
        assert_eq!(name, expected);
        assert_eq!(name.len(), 120);

        // The hash is of the sanitized name: `printf '%s' "sbmesh-c-l-u-s-t-e-r-$(printf
        // 'x%.0s' {1..120})-orders" | sha256sum`.
        let x = "x".repeat(120);
        let name = credential_name("c l u s t e r", &sa(&x, "orders"));
        assert_eq!(name, format!("sbmesh-c-l-u-s-t-e-r-{}-6d7d40a7", &x[..90]));
    }

    #[test]
    fn hostile_values_are_one_shell_word_each() {
        for hostile in [
            "it's",
            "$(touch pwned)",
            "`touch pwned`",
            "two words",
            "a\nb",
            "back\\slash \"q\" $HOME ${X} !x ^y *",
            "",
        ] {
            let word = quote("a test value", hostile).unwrap();
            assert_eq!(bash_reads(&word), hostile, "{word}");
        }
        assert!(quote("a test value", "a\0b").is_err());
    }

    #[test]
    fn the_script_quotes_the_cluster_names_subjects_and_buses() {
        let mut w = workload("pay$(id)", "o'rders", "sb `x`", &["queue/orders/eu"]);
        w.tenant_id = None;
        let o = Onboarding::new(vec![w]);
        let script = render(&o, "https://oidc.example/a'b/", "prod's $(rm -rf ~)").unwrap();

        let name = "sbmesh-prod-s---rm--rf----pay--id--o-rders";
        assert_eq!(
            credential_name("prod's $(rm -rf ~)", &o.identities[0].service_accounts[0]),
            name
        );
        let subject = "system:serviceaccount:pay$(id):o'rders";
        let credential = serde_json::json!({
            "name": name,
            "issuer": "https://oidc.example/a'b/",
            "subject": subject,
            "audiences": ["api://AzureADTokenExchange"],
        })
        .to_string();
        let fic = format!(
            "federated_credential 1 {name} {} {}\n",
            quote("", subject).unwrap(),
            quote("", &credential).unwrap()
        );
        assert!(script.contains(&fic), "{script}");
        assert!(script.contains("\nfind_bus 1 'sb `x`'\n"), "{script}");
        assert!(
            script.contains("\nreadonly ISSUER=\"https://oidc.example/a'b/\"\n"),
            "{script}"
        );
        assert!(
            script.contains("\nfind_identity 1 3c1e7f4a-9b2d-4e8f-a6c5-0d1b2e3f4a51 ''\n"),
            "{script}"
        );
        // Entity names are used literally under the bus's ARM id.
        assert!(script.contains(
            "\nrole_assignment 1 1 /queues/orders/eu 69a216fc-b8fb-44d8-bc22-1f3c2cd27a39 \
             'Azure Service Bus Data Sender'\n"
        ));
        // The words read back as the values.
        assert_eq!(bash_reads(&quote("", subject).unwrap()), subject);
        assert_eq!(bash_reads(&quote("", &credential).unwrap()), credential);
        // No value lands in a comment, where a newline would end it.
        assert!(!script.contains("prod's"));
        // The cluster name only shows sanitized; a NUL elsewhere cannot be a bash value.
        assert!(render(&o, "https://oidc.example/", "a\0b").is_ok());
        assert!(render(&o, "https://oidc.example/\0", "prod").is_err());
    }

    #[test]
    fn service_accounts_of_one_identity_whose_credential_names_collide_are_an_error() {
        let o = Onboarding::new(vec![
            workload("a-b", "c", "sb", &["queue/q"]),
            workload("a", "b-c", "sb", &["queue/q"]),
        ]);
        let e = render(&o, "https://oidc.example/", "prod").unwrap_err();
        assert!(e.contains("a-b/c and a/b-c"), "{e}");
        assert!(e.contains("sbmesh-prod-a-b-c"), "{e}");
        // On two identities, the names do not meet.
        let mut w = workload("a", "b-c", "sb", &["queue/q"]);
        w.client_id = "0a1e7f4a-9b2d-4e8f-a6c5-0d1b2e3f4a51".into();
        let o = Onboarding::new(vec![workload("a-b", "c", "sb", &["queue/q"]), w]);
        assert!(render(&o, "https://oidc.example/", "prod").is_ok());
    }

    #[test]
    fn each_bus_is_found_once() {
        let o = Onboarding::new(vec![
            workload("payments", "orders", "sb-prod", &["queue/a"]),
            workload("payments", "billing", "SB-PROD", &["queue/b"]),
            workload("payments", "audit", "sb-other", &["topic/c"]),
        ]);
        let script = render(&o, "https://oidc.example/", "prod").unwrap();
        assert_eq!(script.matches("\nfind_bus ").count(), 2, "{script}");
        assert!(script.contains("\nfind_bus 1 sb-prod\nfind_bus 2 sb-other\n"));
        assert!(script.contains("\nrole_assignment 1 1 /queues/b "));
        assert!(script.contains("\nrole_assignment 1 2 /topics/c "));
    }

    #[test]
    fn the_script_is_deterministic() {
        let o = || {
            Onboarding::new(vec![
                workload("payments", "orders", "sb-prod", &["queue/a", "topic/t"]),
                workload("shipping", "dispatch", "sb-prod", &["queue/a"]),
            ])
        };
        let a = render(&o(), "https://oidc.example/", "prod").unwrap();
        let b = render(&o(), "https://oidc.example/", "prod").unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("#!/usr/bin/env bash\n"));
        assert!(a.contains("\nset -euo pipefail\n"));
    }

    #[test]
    fn no_identity_makes_a_script_that_says_so() {
        let script = render(&Onboarding::default(), "https://oidc.example/", "prod").unwrap();
        assert!(script.starts_with("#!/usr/bin/env bash\n"));
        assert!(script.ends_with("nothing to create.'\n"));
        assert!(!script.contains("az_get"));
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "sbmesh onboard: no workload opts in, so there is nothing to create.\n"
        );
    }
}
