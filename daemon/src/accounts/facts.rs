//! The public facts: `exists` and `lookup` answer from the store on the async side, never
//! waiting behind hashing; a name that breaks the rules simply does not exist.

use super::{account, store_failed, Accounts};
use qam_client::wire::{ExistsInfo, LookupInfo};
use qam_client::WireError;

impl Accounts {
    pub fn exists(&self, user: &str) -> Result<ExistsInfo, WireError> {
        let exists = match self.settings().rules.username(user) {
            Ok(name) => self.store.contains(&name).map_err(store_failed)?,
            Err(_) => false,
        };
        Ok(ExistsInfo { exists })
    }

    pub fn lookup(&self, user: &str) -> Result<LookupInfo, WireError> {
        let settings = self.settings();
        let Ok(name) = settings.rules.username(user) else {
            return Ok(LookupInfo { account: None });
        };
        let facts = self.store.facts(&name).map_err(store_failed)?;
        Ok(LookupInfo {
            account: facts.map(|facts| account(&settings, name, facts.created(), facts.locked)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::with_alice;

    #[tokio::test]
    async fn facts_of_an_account_and_of_no_account() {
        let (_dir, accounts) = with_alice().await;
        assert!(accounts.exists("Alice").unwrap().exists);
        assert!(!accounts.exists("bob").unwrap().exists);
        assert!(!accounts.exists("Bad Name!").unwrap().exists);
        let alice = accounts.lookup("alice").unwrap().account.unwrap();
        assert_eq!(alice.name, "alice");
        assert!(alice.email.starts_with("alice@"), "{}", alice.email);
        assert!(!alice.locked);
        assert_eq!(accounts.lookup("bob").unwrap().account, None);
        assert_eq!(accounts.lookup("Bad Name!").unwrap().account, None);
    }
}
