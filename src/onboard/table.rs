//! `-o table`: one row per grant, columns aligned for a terminal, as kubectl prints them
//! (three spaces between columns, no trailing space).

use super::plan::Onboarding;

const HEADER: [&str; 6] = [
    "SUBJECT",
    "CLIENT-ID",
    "SERVICEBUS",
    "ENTITY",
    "ROLE",
    "WORKLOADS",
];

/// The grants, identity by identity, in the plan's order. Several ServiceAccounts or workloads
/// needing one grant are listed in one cell, comma-separated. Empty when there is no grant.
pub fn render(onboarding: &Onboarding) -> String {
    let mut rows: Vec<[String; 6]> = Vec::new();
    for identity in &onboarding.identities {
        for g in &identity.grants {
            rows.push([
                g.service_accounts
                    .iter()
                    .map(|s| s.subject())
                    .collect::<Vec<_>>()
                    .join(","),
                identity.client_id.clone(),
                g.bus.fqdn.clone(),
                g.entity.to_string(),
                g.role.short_name().to_string(),
                g.workloads.join(","),
            ]);
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let header = HEADER.map(str::to_string);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = w - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onboard::plan::Workload;

    fn workload(name: &str, sa: &str, client: &str, sends: &[&str], receives: &[&str]) -> Workload {
        let reference = format!("shop/Deployment/{name}");
        Workload::from_items(
            &reference,
            sa,
            client,
            Some("t"),
            "shop-bus",
            sends,
            receives,
        )
        .unwrap()
    }

    #[test]
    fn one_aligned_row_per_grant_with_shared_grants_in_one_row() {
        let table = render(&Onboarding::new(vec![
            workload("api", "api", "c1", &["queue/orders"], &["queue/replies"]),
            workload("worker", "api", "c1", &["queue/ORDERS"], &[]),
            workload("audit", "audit", "c2", &[], &["topic/events:audit"]),
        ]));
        let expected = "\
SUBJECT                            CLIENT-ID   SERVICEBUS                        ENTITY               ROLE            WORKLOADS
system:serviceaccount:shop:api     c1          shop-bus.servicebus.windows.net   queue/orders         Data Sender     shop/Deployment/api,shop/Deployment/worker
system:serviceaccount:shop:api     c1          shop-bus.servicebus.windows.net   queue/replies        Data Receiver   shop/Deployment/api
system:serviceaccount:shop:audit   c2          shop-bus.servicebus.windows.net   topic/events:audit   Data Receiver   shop/Deployment/audit
";
        assert_eq!(table, expected);
    }

    #[test]
    fn no_grant_no_table() {
        assert_eq!(render(&Onboarding::new(vec![])), "");
        assert_eq!(
            render(&Onboarding::new(vec![workload("a", "a", "c", &[], &[])])),
            ""
        );
    }
}
