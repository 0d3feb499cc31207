//! Twilio's list pages, one definition for every resource: the filters
//! carried out (`To`, `From`), the page size and our cursor, and the page
//! fields Twilio's helper libraries read (`next_page_uri` and the rest).

use super::TwilioError;
use serde::{Deserialize, Serialize};

/// The filters carried out; any other (`Status`, `StartTime`…) is
/// refused by name rather than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(rename = "To")]
    pub(super) to: Option<String>,
    #[serde(rename = "From")]
    pub(super) from: Option<String>,
    #[serde(rename = "PageSize")]
    pub(super) page_size: Option<u32>,
    /// The last row of the previous page (our cursor).
    #[serde(rename = "PageToken")]
    pub(super) page_token: Option<String>,
    #[serde(rename = "Page")]
    pub(super) page: Option<u32>,
}

/// A list's query, checked: numbers in E.164, a page of 1–1000.
pub(super) struct Listing {
    pub(super) to: Option<String>,
    pub(super) from: Option<String>,
    pub(super) page_size: u32,
    pub(super) page_token: Option<String>,
    page: u32,
}

impl ListQuery {
    pub(super) fn checked(self) -> Result<Listing, TwilioError> {
        let number = |field: &str, v: Option<String>| -> Result<Option<String>, TwilioError> {
            v.map(|v| {
                crate::e164::normalize_e164(&v)
                    .ok_or_else(|| TwilioError::bad_request(format!("{field} must be E.164")))
            })
            .transpose()
        };
        Ok(Listing {
            to: number("To", self.to)?,
            from: number("From", self.from)?,
            page_size: self.page_size.unwrap_or(50).clamp(1, 1000),
            page_token: self.page_token,
            page: self.page.unwrap_or(0),
        })
    }
}

/// The page fields beside a page's rows.
#[derive(Debug, Serialize)]
pub(super) struct PageMeta {
    first_page_uri: String,
    next_page_uri: Option<String>,
    previous_page_uri: Option<String>,
    page: u32,
    page_size: u32,
    start: u32,
    end: u32,
    uri: String,
}

impl Listing {
    /// The page fields for `count` rows at `base` (the list's path);
    /// `next` is the last row's id when more rows follow.
    pub(super) fn meta(&self, base: &str, count: usize, next: Option<&str>) -> PageMeta {
        let (page, size) = (self.page, self.page_size);
        let mut params = String::new();
        for (k, v) in [("To", &self.to), ("From", &self.from)] {
            if let Some(v) = v {
                params.push_str(&format!("&{k}={}", v.replace('+', "%2B")));
            }
        }
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        PageMeta {
            first_page_uri: format!("{base}?PageSize={size}{params}&Page=0"),
            next_page_uri: next.map(|last| {
                format!(
                    "{base}?PageSize={size}{params}&Page={}&PageToken={last}",
                    page.saturating_add(1)
                )
            }),
            previous_page_uri: None,
            page,
            page_size: size,
            start: page.saturating_mul(size),
            end: page
                .saturating_mul(size)
                .saturating_add(count)
                .saturating_sub(1),
            uri: format!("{base}?PageSize={size}{params}&Page={page}"),
        }
    }
}
