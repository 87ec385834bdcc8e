//! `sbmesh onboard -o az`: the generated script, run with bash against a fake Azure CLI
//! (`tests/fake_az/az`, Python 3 with `jmespath`, first on PATH) over a JSON state, and the
//! state compared after each run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

use serde_json::{Value, json};

use sbmesh::contract::access::{Access, Direction, Entity};
use sbmesh::onboard::az;
use sbmesh::onboard::plan::{Bus, Onboarding, ServiceAccount, Workload};

const ISSUER: &str = "https://oidc.prod-aks.azure.com/0b7f0c1e-2d3a-4b5c-8d9e-f0a1b2c3d4e5/";
/// Hostile on purpose: it must reach the credential names sanitized and run nothing.
const CLUSTER: &str = "prod's $(touch pwned)";
const TENANT: &str = "5d2e8c1a-7b3f-4a9e-b6d4-c0f1e2a3b4c5";
const SUBSCRIPTION: &str = "8a9b0c1d-2e3f-4a5b-9c6d-7e8f9a0b1c2d";
const UAMI_CLIENT: &str = "3c1e7f4a-9b2d-4e8f-a6c5-0d1b2e3f4a51";
const UAMI_PRINCIPAL: &str = "11111111-aaaa-4bbb-8ccc-000000000001";
const APP_CLIENT: &str = "7d2f9a1b-3c4e-4f5a-8b6c-1d2e3f4a5b62";
const APP_OBJECT: &str = "22222222-aaaa-4bbb-8ccc-000000000002";
const APP_SP: &str = "33333333-aaaa-4bbb-8ccc-000000000003";
const SENDER: &str = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39";
const RECEIVER: &str = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0";
const UAMI_FIC: &str = "sbmesh-prod-s---touch-pwned--payments-orders";
const APP_FIC: &str = "sbmesh-prod-s---touch-pwned--shipping-dispatcher";

fn bus_id(name: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/messaging/providers/Microsoft.ServiceBus/\
         namespaces/{name}"
    )
}

fn role_definition(role: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{role}"
    )
}

fn entities(items: &[&str], direction: Direction) -> Vec<Entity> {
    items
        .iter()
        .map(|i| Entity::parse(i, direction).unwrap())
        .collect()
}

fn workload(
    reference: &str,
    (namespace, account): (&str, &str),
    (client_id, tenant_id): (&str, Option<&str>),
    bus: &str,
    sends: &[&str],
    receives: &[&str],
) -> Workload {
    Workload {
        reference: reference.into(),
        service_account: ServiceAccount {
            namespace: namespace.into(),
            name: account.into(),
        },
        client_id: client_id.into(),
        tenant_id: tenant_id.map(Into::into),
        bus: Bus {
            name: bus.into(),
            fqdn: format!("{bus}.servicebus.windows.net"),
        },
        access: Access::new(
            entities(sends, Direction::Send),
            entities(receives, Direction::Receive),
        ),
    }
}

/// Two identities: a managed identity (its client id in upper case, as an annotation may
/// spell it) with a tenant, and an app registration in delegate mode (no tenant) on two buses.
fn onboarding() -> Onboarding {
    Onboarding::new(vec![
        workload(
            "payments/Deployment/orders",
            ("payments", "orders"),
            (&UAMI_CLIENT.to_uppercase(), Some(TENANT)),
            "sb-prod",
            &["queue/orders/eu", "topic/events"],
            &["topic/events:billing"],
        ),
        workload(
            "shipping/Deployment/dispatcher",
            ("shipping", "dispatcher"),
            (APP_CLIENT, None),
            "sb-prod",
            &[],
            &["queue/orders/eu"],
        ),
        workload(
            "shipping/CronJob/audit",
            ("shipping", "dispatcher"),
            (APP_CLIENT, None),
            "sb-other",
            &["queue/audit"],
            &[],
        ),
    ])
}

/// The Azure side before onboarding, with things the script must leave alone.
fn initial_state() -> Value {
    json!({
        "account": {"tenantId": TENANT, "id": SUBSCRIPTION},
        "managedIdentities": [
            {"name": "unrelated-id", "resourceGroup": "identities",
             "clientId": "99999999-aaaa-4bbb-8ccc-000000000009",
             "principalId": "99999999-aaaa-4bbb-8ccc-00000000000a", "federatedCredentials": []},
            {"name": "orders-id", "resourceGroup": "identities", "clientId": UAMI_CLIENT,
             "principalId": UAMI_PRINCIPAL, "federatedCredentials": [
                {"name": "staging", "issuer": "https://oidc.staging.example/",
                 "subject": "system:serviceaccount:payments:orders",
                 "audiences": ["api://AzureADTokenExchange"]}
             ]}
        ],
        "appRegistrations": [
            {"appId": APP_CLIENT, "id": APP_OBJECT, "spId": APP_SP,
             "displayName": "shipping-dispatcher", "federatedCredentials": []}
        ],
        "servicebusNamespaces": [
            {"name": "sb-prod", "id": bus_id("sb-prod")},
            {"name": "sb-other", "id": bus_id("sb-other")}
        ],
        "roleAssignments": [
            {"principalId": UAMI_PRINCIPAL, "roleDefinitionId": role_definition(SENDER),
             "scope": bus_id("sb-other"), "principalType": "ServicePrincipal"}
        ]
    })
}

fn fic(name: &str, subject: &str) -> Value {
    json!({"name": name, "issuer": ISSUER, "subject": subject,
           "audiences": ["api://AzureADTokenExchange"]})
}

fn assignment(principal: &str, role: &str, scope: &str) -> Value {
    json!({"principalId": principal, "roleDefinitionId": role_definition(role), "scope": scope,
           "principalType": "ServicePrincipal"})
}

/// The managed identity's workload alone, for the cases about what is already there.
fn managed_identity_only() -> Onboarding {
    let mut o = onboarding();
    o.workloads.truncate(1);
    Onboarding::new(o.workloads)
}

/// `initial_state()` after a complete run of `onboarding()`.
fn onboarded_state() -> Value {
    let mut s = managed_identity_onboarded_state();
    s["appRegistrations"][0]["federatedCredentials"] =
        json!([fic(APP_FIC, "system:serviceaccount:shipping:dispatcher")]);
    let prod = bus_id("sb-prod");
    let other = bus_id("sb-other");
    s["roleAssignments"].as_array_mut().unwrap().extend([
        assignment(APP_SP, RECEIVER, &format!("{prod}/queues/orders/eu")),
        assignment(APP_SP, SENDER, &format!("{other}/queues/audit")),
    ]);
    s
}

/// `initial_state()` after a complete run of `managed_identity_only()`.
fn managed_identity_onboarded_state() -> Value {
    let mut s = initial_state();
    s["managedIdentities"][1]["federatedCredentials"]
        .as_array_mut()
        .unwrap()
        .push(fic(UAMI_FIC, "system:serviceaccount:payments:orders"));
    let prod = bus_id("sb-prod");
    s["roleAssignments"].as_array_mut().unwrap().extend([
        assignment(UAMI_PRINCIPAL, SENDER, &format!("{prod}/queues/orders/eu")),
        assignment(UAMI_PRINCIPAL, SENDER, &format!("{prod}/topics/events")),
        assignment(
            UAMI_PRINCIPAL,
            RECEIVER,
            &format!("{prod}/topics/events/subscriptions/billing"),
        ),
    ]);
    s
}

fn fake_az_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_az")
}

/// The fake needs python3 and jmespath; CI installs them. Missing, the tests fail, loudly.
fn require_fake_az() {
    static CHECK: Once = Once::new();
    CHECK.call_once(|| {
        let out = Command::new("python3")
            .args(["-c", "import jmespath"])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "tests/onboard_az.rs needs the Python package jmespath for the fake az \
                 (apt-get install python3-jmespath, or pip install jmespath): {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("tests/onboard_az.rs needs python3 for the fake az: {e}"),
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(fake_az_dir().join("az"))
                .expect("tests/fake_az/az")
                .permissions()
                .mode();
            assert!(mode & 0o111 != 0, "tests/fake_az/az must be executable");
        }
    });
}

/// A directory with the script, the fake az's state and its call log.
struct Azure {
    dir: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Azure {
    fn new(onboarding: &Onboarding, state: &Value) -> Self {
        Self::new_with_issuer(onboarding, state, ISSUER)
    }

    fn new_with_issuer(onboarding: &Onboarding, state: &Value, issuer: &str) -> Self {
        Self::with_script(
            &az::render(onboarding, issuer, CLUSTER).expect("renders"),
            state,
        )
    }

    fn with_script(script: &str, state: &Value) -> Self {
        require_fake_az();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("onboard.sh"), script).unwrap();
        let azure = Self { dir };
        azure.set_state(state);
        azure
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn set_state(&self, state: &Value) {
        std::fs::write(self.path("state.json"), state.to_string()).unwrap();
    }

    fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path("state.json")).unwrap()).unwrap()
    }

    /// The az calls so far, each its arguments.
    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.path("az.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn creates(&self) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|c| c.iter().any(|a| a == "create"))
            .collect()
    }

    fn clear_log(&self) {
        let _ = std::fs::remove_file(self.path("az.log"));
    }

    fn run(&self) -> Run {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(fake_az_dir()).chain(std::env::split_paths(&path)),
        )
        .unwrap();
        let Output {
            status,
            stdout,
            stderr,
        } = Command::new("bash")
            .arg(self.path("onboard.sh"))
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("FAKE_AZ_STATE", self.path("state.json"))
            .env("FAKE_AZ_LOG", self.path("az.log"))
            .output()
            .expect("bash runs");
        assert!(
            !self.path("pwned").exists(),
            "a value in the script was run as a command"
        );
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }
}

fn ok(run: &Run) {
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

fn failed(run: &Run) {
    assert_ne!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

#[test]
fn the_first_run_creates_exactly_the_credentials_and_assignments_then_a_second_nothing() {
    let azure = Azure::new(&onboarding(), &initial_state());
    let run = azure.run();
    ok(&run);
    assert_eq!(azure.state(), onboarded_state());
    let prod = bus_id("sb-prod");
    let other = bus_id("sb-other");
    assert_eq!(
        run.stdout,
        format!(
            "created federated credential {UAMI_FIC} on managed identity orders-id \
             (system:serviceaccount:payments:orders)\n\
             created role assignment Azure Service Bus Data Sender on {prod}/queues/orders/eu \
             for managed identity orders-id\n\
             created role assignment Azure Service Bus Data Sender on {prod}/topics/events \
             for managed identity orders-id\n\
             created role assignment Azure Service Bus Data Receiver on \
             {prod}/topics/events/subscriptions/billing for managed identity orders-id\n\
             created federated credential {APP_FIC} on app registration shipping-dispatcher \
             (system:serviceaccount:shipping:dispatcher)\n\
             created role assignment Azure Service Bus Data Receiver on {prod}/queues/orders/eu \
             for app registration shipping-dispatcher\n\
             created role assignment Azure Service Bus Data Sender on {other}/queues/audit \
             for app registration shipping-dispatcher\n"
        )
    );
    // Each list is read once, whatever the number of identities and buses.
    let calls = azure.calls();
    let count = |cmd: &[&str]| {
        calls
            .iter()
            .filter(|c| c.len() >= cmd.len() && c.iter().zip(cmd).all(|(a, b)| a == b))
            .count()
    };
    assert_eq!(count(&["identity", "list"]), 1);
    assert_eq!(count(&["servicebus", "namespace", "list"]), 1);
    assert_eq!(azure.creates().len(), 7);

    azure.clear_log();
    let again = azure.run();
    ok(&again);
    assert_eq!(azure.state(), onboarded_state());
    assert_eq!(azure.creates(), Vec::<Vec<String>>::new());
    let lines: Vec<&str> = again.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{}", again.stdout);
    assert!(
        lines.iter().all(|l| l.starts_with("present: ")),
        "{}",
        again.stdout
    );
    assert!(again.stdout.contains(&format!(
        "present: federated credential for system:serviceaccount:payments:orders on managed \
         identity orders-id ({UAMI_FIC})\n"
    )));
}

/// The golden script of examples/payments.yaml (tests/onboard.rs renders it through the CLI)
/// against an Azure where the orders identity is a managed identity and billing an app
/// registration.
#[test]
fn the_payments_example_script_onboards_both_identities_once() {
    const ORDERS: &str = "3c1e7f4a-9b2d-4e8f-a6c5-0d1b2e3f4a51";
    const BILLING: &str = "8a2f4c6e-1d3b-4f5a-9c7e-2b4d6f8a0c13";
    const PAYMENTS_TENANT: &str = "5d2e8c1a-7b3f-4a9e-b6d4-c0f1e2a3b4c5";
    const PAYMENTS_ISSUER: &str = "https://westeurope.oic.prod-aks.azure.com/5d2e8c1a-7b3f-4a9e-b6d4-c0f1e2a3b4c5/1f0e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/";
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onboard/payments.az.sh"),
    )
    .unwrap();
    let bus = bus_id("payments-prod");
    let state = json!({
        "account": {"tenantId": PAYMENTS_TENANT, "id": SUBSCRIPTION},
        "managedIdentities": [{"name": "orders", "resourceGroup": "payments",
            "clientId": ORDERS, "principalId": "0a0a0a0a-0000-4000-8000-00000000000a",
            "federatedCredentials": []}],
        "appRegistrations": [{"appId": BILLING, "id": "0b0b0b0b-0000-4000-8000-00000000000b",
            "spId": "0c0c0c0c-0000-4000-8000-00000000000c", "displayName": "billing",
            "federatedCredentials": []}],
        "servicebusNamespaces": [{"name": "payments-prod", "id": bus}],
        "roleAssignments": []
    });
    let azure = Azure::with_script(&script, &state);
    ok(&azure.run());
    let after = azure.state();
    let fic = |name: &str, subject: &str| {
        json!([{"name": name, "issuer": PAYMENTS_ISSUER, "subject": subject,
                "audiences": ["api://AzureADTokenExchange"]}])
    };
    assert_eq!(
        after["managedIdentities"][0]["federatedCredentials"],
        fic(
            "sbmesh-prod-weu-payments-orders",
            "system:serviceaccount:payments:orders"
        )
    );
    assert_eq!(
        after["appRegistrations"][0]["federatedCredentials"],
        fic(
            "sbmesh-prod-weu-payments-billing",
            "system:serviceaccount:payments:billing"
        )
    );
    let orders = "0a0a0a0a-0000-4000-8000-00000000000a";
    let billing = "0c0c0c0c-0000-4000-8000-00000000000c";
    assert_eq!(
        after["roleAssignments"],
        json!([
            assignment(orders, SENDER, &format!("{bus}/queues/order-created")),
            assignment(orders, SENDER, &format!("{bus}/queues/payment-requested")),
            assignment(orders, SENDER, &format!("{bus}/topics/payments")),
            assignment(
                billing,
                RECEIVER,
                &format!("{bus}/topics/payments/subscriptions/billing")
            ),
        ])
    );
    azure.clear_log();
    ok(&azure.run());
    assert_eq!(azure.creates(), Vec::<Vec<String>>::new());
    assert_eq!(azure.state(), after);
}

#[test]
fn a_missing_identity_stops_before_anything_is_created() {
    let mut state = initial_state();
    state["appRegistrations"] = json!([]);
    let azure = Azure::new(&onboarding(), &state);
    let run = azure.run();
    failed(&run);
    assert!(run.stderr.contains(APP_CLIENT), "{}", run.stderr);
    assert!(run.stderr.contains(SUBSCRIPTION), "{}", run.stderr);
    assert!(run.stderr.contains("az login --tenant"), "{}", run.stderr);
    assert_eq!(azure.creates(), Vec::<Vec<String>>::new());
    assert_eq!(azure.state(), state);
    assert_eq!(run.stdout, "");
}

#[test]
fn an_app_registration_without_a_service_principal_is_an_error() {
    let mut state = initial_state();
    state["appRegistrations"][0]["spId"] = Value::Null;
    let azure = Azure::new(&onboarding(), &state);
    let run = azure.run();
    failed(&run);
    assert!(
        run.stderr
            .contains(&format!("az ad sp create --id {APP_CLIENT}")),
        "{}",
        run.stderr
    );
    assert_eq!(azure.state(), state);
}

#[test]
fn a_missing_bus_stops_before_anything_is_created() {
    let mut state = initial_state();
    state["servicebusNamespaces"].as_array_mut().unwrap().pop();
    let azure = Azure::new(&onboarding(), &state);
    let run = azure.run();
    failed(&run);
    assert!(
        run.stderr.contains(&format!(
            "no Service Bus namespace named sb-other in subscription {SUBSCRIPTION}"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(azure.creates(), Vec::<Vec<String>>::new());
    assert_eq!(azure.state(), state);
}

#[test]
fn a_credential_with_the_issuer_and_subject_under_another_name_is_present() {
    let mut state = initial_state();
    let handmade = json!({"name": "handmade", "issuer": ISSUER,
                          "subject": "system:serviceaccount:payments:orders",
                          "audiences": ["api://AzureADTokenExchange"]});
    state["managedIdentities"][1]["federatedCredentials"]
        .as_array_mut()
        .unwrap()
        .push(handmade.clone());
    let azure = Azure::new(&managed_identity_only(), &state);
    let run = azure.run();
    ok(&run);
    assert!(
        run.stdout.contains(
            "present: federated credential for system:serviceaccount:payments:orders on \
             managed identity orders-id (handmade)\n"
        ),
        "{}",
        run.stdout
    );
    let mut expected = managed_identity_onboarded_state();
    expected["managedIdentities"][1]["federatedCredentials"] = json!([
        initial_state()["managedIdentities"][1]["federatedCredentials"][0],
        handmade
    ]);
    assert_eq!(azure.state(), expected);
}

#[test]
fn a_credential_with_the_name_and_another_subject_is_left_alone_and_an_error() {
    let mut state = initial_state();
    state["managedIdentities"][1]["federatedCredentials"]
        .as_array_mut()
        .unwrap()
        .push(fic(UAMI_FIC, "system:serviceaccount:other:orders"));
    let azure = Azure::new(&onboarding(), &state);
    let run = azure.run();
    failed(&run);
    assert!(run.stderr.contains(UAMI_FIC), "{}", run.stderr);
    assert!(
        run.stderr.contains("system:serviceaccount:other:orders"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--cluster-name"), "{}", run.stderr);
    assert_eq!(azure.creates(), Vec::<Vec<String>>::new());
    assert_eq!(azure.state(), state);
}

#[test]
fn another_tenant_is_an_error() {
    let other = "0f0f0f0f-1111-4222-8333-444444444444";
    let mut state = initial_state();
    state["account"]["tenantId"] = json!(other);
    let azure = Azure::new(&onboarding(), &state);
    let run = azure.run();
    failed(&run);
    assert!(run.stderr.contains(other), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("az login --tenant {TENANT}")),
        "{}",
        run.stderr
    );
    assert_eq!(azure.creates(), Vec::<Vec<String>>::new());
    assert_eq!(azure.state(), state);
}

#[test]
fn an_assignment_whose_scope_differs_only_in_case_is_present() {
    let scope = format!("{}/queues/orders/eu", bus_id("sb-prod"));
    let shouted = json!({"principalId": UAMI_PRINCIPAL,
        // The short form of the role definition id, and the scope in upper case.
        "roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{SENDER}"),
        "scope": scope.to_uppercase(), "principalType": "ServicePrincipal"});
    let mut state = initial_state();
    state["roleAssignments"]
        .as_array_mut()
        .unwrap()
        .push(shouted.clone());
    let azure = Azure::new(&managed_identity_only(), &state);
    let run = azure.run();
    ok(&run);
    assert!(
        run.stdout.contains(&format!(
            "present: role assignment Azure Service Bus Data Sender on {scope} for managed \
             identity orders-id\n"
        )),
        "{}",
        run.stdout
    );
    let mut expected = managed_identity_onboarded_state();
    let assignments = expected["roleAssignments"].as_array_mut().unwrap();
    assignments.remove(1);
    assignments.insert(1, shouted);
    assert_eq!(azure.state(), expected);
    assert_eq!(azure.creates().len(), 3);
}

#[test]
fn no_identity_makes_a_script_that_calls_nothing() {
    let azure = Azure::new(&Onboarding::default(), &initial_state());
    let run = azure.run();
    ok(&run);
    assert!(run.stdout.contains("nothing to create"), "{}", run.stdout);
    assert_eq!(azure.calls(), Vec::<Vec<String>>::new());
}

const HOSTILE_ISSUER: &str = "https://oidc.example/$x'`touch pwned`/";

/// Values no real input has (names are validated before they get here), to show that each
/// reaches az as it is and none runs.
fn hostile() -> Onboarding {
    Onboarding::new(vec![workload(
        "pay$(id)/Deployment/o'rders",
        ("pay$(touch pwned)", "o'rders"),
        ("'$(touch pwned)'", Some("`touch pwned`")),
        "sb \"$HOME\" `touch pwned`",
        &["queue/orders/eu"],
        &[],
    )])
}

#[test]
fn hostile_values_reach_az_as_they_are() {
    let bus = "/subscriptions/s/resourceGroups/r g/providers/Microsoft.ServiceBus/namespaces/sb \"$HOME\" `touch pwned`";
    let state = json!({
        "account": {"tenantId": "`touch pwned`", "id": "s"},
        "managedIdentities": [
            {"name": "id'$(touch pwned)", "resourceGroup": "rg `touch pwned`",
             "clientId": "'$(touch pwned)'", "principalId": "p 1", "federatedCredentials": []}
        ],
        "appRegistrations": [],
        "servicebusNamespaces": [{"name": "sb \"$HOME\" `touch pwned`", "id": bus}],
        "roleAssignments": []
    });
    let azure = Azure::new_with_issuer(&hostile(), &state, HOSTILE_ISSUER);
    let run = azure.run();
    ok(&run);
    let mut expected = state.clone();
    expected["managedIdentities"][0]["federatedCredentials"] = json!([{
        "name": "sbmesh-prod-s---touch-pwned--pay--touch-pwned--o-rders",
        "issuer": HOSTILE_ISSUER,
        "subject": "system:serviceaccount:pay$(touch pwned):o'rders",
        "audiences": ["api://AzureADTokenExchange"]
    }]);
    expected["roleAssignments"] = json!([{
        "principalId": "p 1",
        "roleDefinitionId": format!("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/{SENDER}"),
        "scope": format!("{bus}/queues/orders/eu"),
        "principalType": "ServicePrincipal"
    }]);
    assert_eq!(azure.state(), expected);
    let again = azure.run();
    ok(&again);
    assert_eq!(again.stdout.lines().count(), 2, "{}", again.stdout);
    assert!(
        again.stdout.lines().all(|l| l.starts_with("present: ")),
        "{}",
        again.stdout
    );
}

#[test]
fn the_scripts_pass_shellcheck() {
    if Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: shellcheck not found");
        return;
    }
    for (onboarding, issuer) in [
        (onboarding(), ISSUER),
        (Onboarding::default(), ISSUER),
        (hostile(), HOSTILE_ISSUER),
    ] {
        let script = az::render(&onboarding, issuer, CLUSTER).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("onboard.sh");
        std::fs::write(&path, &script).unwrap();
        let out = Command::new("shellcheck")
            .args(["-S", "style"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            script
        );
    }
}
