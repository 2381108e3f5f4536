//! The public facts: `exists` and `lookup` answer from the store on the async side, never
//! waiting behind hashing; a name that breaks the rules simply does not exist.

use super::deletion::deletion_info;
use super::{account, store_failed, Accounts};
use qam_client::wire::{Account, ExistsInfo, LookupInfo};
use qam_client::WireError;

impl Accounts {
    pub fn exists(&self, user: &str) -> Result<ExistsInfo, WireError> {
        let exists = match self.settings().rules.username(user) {
            Ok(name) => self.store.contains(&name).map_err(store_failed)?,
            Err(_) => false,
        };
        Ok(ExistsInfo { exists })
    }

    /// `admin` adds where a legacy verifier came from, as `list` shows it to admins.
    pub fn lookup(&self, user: &str, admin: bool) -> Result<LookupInfo, WireError> {
        let settings = self.settings();
        let Ok(name) = settings.rules.username(user) else {
            return Ok(LookupInfo { account: None });
        };
        let Some(facts) = self.store.facts(&name).map_err(store_failed)? else {
            return Ok(LookupInfo { account: None });
        };
        let deletion = match facts.deleting && admin {
            true => self.store.get(&name).map_err(store_failed)?,
            false => None,
        };
        Ok(LookupInfo {
            account: Some(Account {
                legacy: facts.legacy.filter(|_| admin).map(|kind| kind.to_string()),
                deleting: facts.deleting,
                deletion: deletion.and_then(|record| record.deletion.as_ref().map(deletion_info)),
                ..account(&settings, name, facts.created(), facts.locked)
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::with_alice;
    use super::super::ImportBatch;
    use qam_client::wire::ExportRecord;

    /// SCRAM-SHA-1 credentials of "pencil" from RFC 5802, as Prosody stores them.
    const RFC5802_PENCIL: &str =
        "{SCRAM-SHA-1}4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE=";

    #[tokio::test]
    async fn facts_of_an_account_and_of_no_account() {
        let (_dir, accounts) = with_alice().await;
        assert!(accounts.exists("Alice").unwrap().exists);
        assert!(!accounts.exists("bob").unwrap().exists);
        assert!(!accounts.exists("Bad Name!").unwrap().exists);
        let alice = accounts.lookup("alice", false).unwrap().account.unwrap();
        assert_eq!(alice.name, "alice");
        assert!(alice.email.starts_with("alice@"), "{}", alice.email);
        assert!(!alice.locked);
        assert_eq!(accounts.lookup("bob", false).unwrap().account, None);
        assert_eq!(accounts.lookup("Bad Name!", false).unwrap().account, None);
    }

    #[tokio::test]
    async fn only_admins_see_a_legacy_verifier() {
        let (_dir, accounts) = with_alice().await;
        let moved_in = ExportRecord {
            name: "old".into(),
            hash: RFC5802_PENCIL.into(),
            created: "2026-11-25".into(),
            locked: false,
            uid: None,
            origin: Some("prosody".into()),
            password: None,
        };
        accounts
            .import(ImportBatch {
                records: vec![moved_in],
                replace: false,
                dry_run: false,
                allow_weak: true,
                system_users: false,
            })
            .await
            .unwrap();
        let seen = |admin| {
            accounts
                .lookup("old", admin)
                .unwrap()
                .account
                .unwrap()
                .legacy
        };
        assert_eq!(seen(true).as_deref(), Some("prosody SCRAM-SHA-1"));
        assert_eq!(
            seen(false),
            None,
            "services are not told where a verifier came from"
        );
        assert_eq!(
            accounts
                .lookup("alice", true)
                .unwrap()
                .account
                .unwrap()
                .legacy,
            None
        );
    }
}
