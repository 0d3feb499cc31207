//! Pagination of the `/v1` lists: `?limit=` (1–500, default 100), and
//! the `next_cursor` a page hands out for the next one.

use super::error::ApiError;
use super::schema::PageQuery;

const DEFAULT_PAGE: u32 = 100;
/// One less than the store's own cap: a page asks for one row more to
/// know whether another page follows.
const MAX_PAGE: u32 = 500;

/// The rows a page holds (`?limit=`), or 422 naming `limit`.
pub(super) fn page_size(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE as usize),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::field("limit", "limit must be between 1 and 500")),
    }
}

/// One page of a list: its rows, and the cursor of the next page when
/// one follows.
pub(super) struct Page<O> {
    pub data: Vec<O>,
    pub next_cursor: Option<String>,
}

/// The page `q` asks for of `rows`, which are sorted by `key`: the rows
/// whose key sorts after `q.cursor`, at most `q.limit` of them, each
/// mapped by `out`. The next page's cursor is the last row's key.
pub(super) fn page<T, O>(
    rows: Vec<T>,
    q: &PageQuery,
    key: impl Fn(&T) -> &str,
    out: impl FnMut(T) -> O,
) -> Result<Page<O>, ApiError> {
    let n = page_size(q.limit)?;
    let rest = match &q.cursor {
        Some(c) => rows.into_iter().filter(|r| key(r) > c.as_str()).collect(),
        None => rows,
    };
    Ok(cut(rest, n, key, out))
}

/// The first `n` (at least 1) of `rows`, the rows after the cursor in the
/// list's order, each mapped by `out`; the next page's cursor is the key of
/// the last row given when more rows follow.
pub(super) fn cut<T, O>(
    mut rows: Vec<T>,
    n: usize,
    key: impl Fn(&T) -> &str,
    out: impl FnMut(T) -> O,
) -> Page<O> {
    let next_cursor = (rows.len() > n).then(|| key(&rows[n - 1]).to_string());
    rows.truncate(n);
    Page {
        data: rows.into_iter().map(out).collect(),
        next_cursor,
    }
}

/// `rows` (in the store's order) after the one whose key is `cursor`; none
/// when no row has it.
pub(super) fn after_row<T>(
    mut rows: Vec<T>,
    cursor: Option<&str>,
    key: impl Fn(&T) -> &str,
) -> Vec<T> {
    if let Some(c) = cursor {
        match rows.iter().position(|r| key(r) == c) {
            Some(i) => {
                rows.drain(..=i);
            }
            None => rows.clear(),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(limit: Option<u32>, cursor: Option<&str>) -> PageQuery {
        PageQuery {
            limit,
            cursor: cursor.map(String::from),
        }
    }

    #[test]
    fn pages_by_key_hand_out_the_last_key_while_rows_follow() {
        let rows = || vec!["a", "b", "c", "d", "e"];
        let p = page(rows(), &q(Some(2), None), |r| r, |r| r.len()).unwrap();
        assert_eq!((p.data, p.next_cursor.as_deref()), (vec![1, 1], Some("b")));
        let p = page(rows(), &q(Some(2), Some("b")), |r| r, |r| r).unwrap();
        assert_eq!(
            (p.data, p.next_cursor.as_deref()),
            (vec!["c", "d"], Some("d"))
        );
        let p = page(rows(), &q(Some(2), Some("d")), |r| r, |r| r).unwrap();
        assert_eq!((p.data, p.next_cursor), (vec!["e"], None));
        // A cursor that is no row's key still starts after it.
        let p = page(rows(), &q(None, Some("bb")), |r| r, |r| r).unwrap();
        assert_eq!((p.data, p.next_cursor), (vec!["c", "d", "e"], None));
        for bad in [0, 501] {
            let e = page(rows(), &q(Some(bad), None), |r| r, |r| r)
                .err()
                .unwrap();
            assert_eq!(e.detail.field.as_deref(), Some("limit"));
        }
    }

    #[test]
    fn rows_in_store_order_resume_after_the_cursor_row_only() {
        let rows = || vec!["z", "x", "y"];
        assert_eq!(after_row(rows(), None, |r| r), ["z", "x", "y"]);
        assert_eq!(after_row(rows(), Some("z"), |r| r), ["x", "y"]);
        assert_eq!(after_row(rows(), Some("y"), |r| r), Vec::<&str>::new());
        assert_eq!(after_row(rows(), Some("w"), |r| r), Vec::<&str>::new());
        let p = cut(rows(), 2, |r| r, |r| r);
        assert_eq!(
            (p.data, p.next_cursor.as_deref()),
            (vec!["z", "x"], Some("x"))
        );
        let p = cut(rows(), 3, |r| r, |r| r);
        assert_eq!(p.next_cursor, None);
    }
}
