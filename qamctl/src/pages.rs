//! Walking the daemon's paged answers (`list`, `export`): ask with `after`, hand each page to
//! the caller, continue from `next` until it is null.

use crate::error::CtlError;
use qam_client::wire::{Account, ExportPage, ExportRecord, ListPage, MAX_PAGE};
use qam_client::{Client, Request};
use serde::de::DeserializeOwned;

/// An answer that carries one page of items and the name to continue after.
pub trait Page: DeserializeOwned {
    type Item;
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

impl Page for ListPage {
    type Item = Account;
    fn into_parts(self) -> (Vec<Account>, Option<String>) {
        (self.users, self.next)
    }
}

impl Page for ExportPage {
    type Item = ExportRecord;
    fn into_parts(self) -> (Vec<ExportRecord>, Option<String>) {
        (self.records, self.next)
    }
}

/// Calls `request(after, limit)` page by page (largest pages the protocol allows) and passes
/// every page's items to `sink`. Fails if a page's `next` does not move forward.
pub fn each_page<P: Page>(
    client: &mut Client,
    request: impl Fn(Option<String>, Option<u32>) -> Request,
    mut sink: impl FnMut(Vec<P::Item>) -> Result<(), CtlError>,
) -> Result<(), CtlError> {
    let mut after: Option<String> = None;
    loop {
        let page: P = client.call(&request(after.clone(), Some(MAX_PAGE)))?;
        let (items, next) = page.into_parts();
        sink(items)?;
        match next {
            None => return Ok(()),
            Some(next) if after.as_ref().is_some_and(|after| next <= *after) => {
                return Err(CtlError::Protocol(format!(
                    "a page ends at `{next}`, which does not come after the previous page"
                )))
            }
            Some(next) => after = Some(next),
        }
    }
}
