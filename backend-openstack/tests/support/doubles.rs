//! What the service doubles share: Nova's and Zun's paginated listings and the quotas
//! every double can be given.

use std::collections::HashMap;
use std::sync::Mutex;

/// One page of a listing, as the doubles serve it.
pub struct Page<'a, T> {
    /// The items on the page.
    pub items: Vec<&'a T>,
    /// The page size used (the `limit` for the next link).
    pub limit: usize,
    /// The last item of the page when more follow (the next link's marker).
    pub next: Option<&'a T>,
}

/// The page of `items` (in `seq` order) that `?limit=&marker=` asks for. Pages hold 2
/// at most, whatever the limit, so clients must follow the next link. `Err(marker)`
/// when no item has the marker's id.
pub fn page<'a, 'q, T>(
    items: impl Iterator<Item = &'a T>,
    q: &'q HashMap<String, String>,
    seq: impl Fn(&T) -> usize,
    id: impl Fn(&T) -> &str,
) -> Result<Page<'a, T>, &'q str> {
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(2)
        .min(2);
    let mut all: Vec<&T> = items.collect();
    all.sort_by_key(|t| seq(t));
    let start = match q.get("marker") {
        Some(m) => all.iter().position(|t| id(t) == m).ok_or(m.as_str())? + 1,
        None => 0,
    };
    let next = (start + limit < all.len()).then(|| all[start + limit - 1]);
    let items = all.into_iter().skip(start).take(limit).collect();
    Ok(Page { items, limit, next })
}

/// The quota when it is set and `used` has reached it (the create must be refused).
pub fn quota_reached(quota: &Mutex<Option<usize>>, used: usize) -> Option<usize> {
    quota.lock().unwrap().filter(|q| used >= *q)
}
