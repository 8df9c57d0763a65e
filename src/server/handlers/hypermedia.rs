//! vantage6's hypermedia: links to related resources, to filtered lists, and to the other pages
//! of a list, all below the server's API path.

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;

use super::error::ApiError;
use super::Query;
use crate::api::{Link, Page, PageLinks, Paging};
use crate::server::state::AppState;

/// A resource that has a page of its own, `<api path>/<name>/<id>`.
#[derive(Clone, Copy, Debug)]
pub enum Resource {
    Organization,
    Collaboration,
    Task,
    Run,
    Result,
    User,
}

impl Resource {
    fn path(self) -> &'static str {
        match self {
            Resource::Organization => "organization",
            Resource::Collaboration => "collaboration",
            Resource::Task => "task",
            Resource::Run => "run",
            Resource::Result => "result",
            Resource::User => "user",
        }
    }

    /// What this server answers at `<name>/<id>`.
    fn methods(self) -> &'static [&'static str] {
        match self {
            Resource::Run => &["GET", "PATCH"],
            _ => &["GET"],
        }
    }
}

/// Builds links below the API path.
#[derive(Clone, Copy, Debug)]
pub struct Links<'a>(pub &'a str);

impl Links<'_> {
    pub fn of(s: &AppState) -> Links<'_> {
        Links(&s.config.api_path)
    }

    /// A link to one resource.
    pub fn one<I: std::fmt::Display>(self, r: Resource, id: I) -> Link<I> {
        Link {
            link: format!("{}/{}/{id}", self.0, r.path()),
            methods: r.methods().iter().map(|m| (*m).to_string()).collect(),
            id,
        }
    }

    /// A link to a list filtered by one field, e.g. `/api/run?task_id=4`.
    pub fn list(self, list: &str, field: &str, id: impl std::fmt::Display) -> String {
        format!("{}/{list}?{field}={id}", self.0)
    }
}

/// The page a list request asks for, and the request's path and query to link the others by.
#[derive(Clone, Debug)]
pub struct Listing {
    paging: Paging,
    path: String,
    query: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Listing {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(paging) = Query::<Paging>::from_request_parts(parts, state).await?;
        if paging.page == 0 {
            return Err(ApiError::bad("The 'page' parameter should be >= 1"));
        }
        if paging.per_page == 0 {
            return Err(ApiError::bad("The 'per_page' parameter should be >= 1"));
        }
        // The whole path, with the API path a nested router strips from `Uri`.
        let uri = match OriginalUri::from_request_parts(parts, state).await {
            Ok(OriginalUri(u)) => u,
            Err(never) => match never {},
        };
        let query = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        Ok(Listing {
            paging,
            path: uri.path().to_string(),
            query,
        })
    }
}

impl Listing {
    /// The asked-for page of `items`, with links to the first, previous, this, next and last
    /// pages (the request's query with `page` set), as vantage6 pages its lists.
    pub fn page<T>(&self, items: Vec<T>) -> Page<T> {
        let (page, size) = (self.paging.page as usize, self.paging.per_page as usize);
        let total = items.len();
        let pages = total.div_ceil(size);
        let skip = (page - 1).saturating_mul(size);
        let data: Vec<T> = items.into_iter().skip(skip).take(size).collect();
        let has_next = skip + data.len() < total;
        let to = |p: usize| (p > 0).then(|| self.link_to(p));
        Page {
            data,
            links: PageLinks {
                first: to(1),
                previous: to(page - 1),
                this: to(page),
                next: if has_next { to(page + 1) } else { None },
                last: to(pages),
            },
        }
    }

    fn link_to(&self, page: usize) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let mut set = false;
        for (k, v) in &self.query {
            if k == "page" {
                if !set {
                    q.append_pair("page", &page.to_string());
                    set = true;
                }
            } else {
                q.append_pair(k, v);
            }
        }
        if !set {
            q.append_pair("page", &page.to_string());
        }
        format!("{}?{}", self.path, q.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(page: u32, per_page: u32, query: &[(&str, &str)]) -> Listing {
        Listing {
            paging: Paging { page, per_page },
            path: "/api/run".into(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        }
    }

    #[test]
    fn pages_link_as_vantage6s_do() {
        let p = listing(2, 10, &[("task_id", "4"), ("page", "2")]).page((0..25).collect());
        assert_eq!(p.data, (10..20).collect::<Vec<_>>());
        let l = p.links;
        assert_eq!(l.first.as_deref(), Some("/api/run?task_id=4&page=1"));
        assert_eq!(l.previous.as_deref(), Some("/api/run?task_id=4&page=1"));
        assert_eq!(l.this.as_deref(), Some("/api/run?task_id=4&page=2"));
        assert_eq!(l.next.as_deref(), Some("/api/run?task_id=4&page=3"));
        assert_eq!(l.last.as_deref(), Some("/api/run?task_id=4&page=3"));

        let last = listing(3, 10, &[("task_id", "4")]).page((0..25).collect());
        assert_eq!(last.data.len(), 5);
        assert_eq!(last.links.next, None);
        // An empty list has no last page; a page past the end is empty.
        let empty = listing(1, 10, &[]).page(Vec::<u8>::new());
        assert_eq!(empty.links.last, None);
        assert_eq!(empty.links.this.as_deref(), Some("/api/run?page=1"));
        assert!(listing(9, 10, &[]).page(vec![1]).data.is_empty());
    }
}
