//! Routing by host (API group domain), method and path template.
//!
//! Paths are matched segment by segment in a trie: a literal segment beats `{param}`, which
//! beats `{param+}` (the rest of the path), and any exact match beats a prefix match; among
//! prefix routes the longest wins. Parameters are named by each route, so `/flows/{Sid}` and
//! `/flows/{FlowSid}/runs` can share the position (OpenAPI documents do). A lookup collects
//! the path's segments and copies the values it captures.

use http::Method;
use std::collections::HashMap;

/// A path template that could not be added.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("`{0}`: a segment must be a literal, {{name}} or {{name+}}")]
    BadSegment(String),
    #[error("`{0}`: {{name+}} must be the last segment")]
    CatchAllNotLast(String),
    #[error("`{0}` with method {1} is already routed on this host")]
    Duplicate(String, String),
}

/// Which methods a route answers; `None` means any.
pub type MethodSet = Option<Vec<Method>>;

/// A routing hit: the value, the captured path parameters, and whether the method matched.
/// A miss on method alone is still returned for `OPTIONS`, so a CORS policy on the route can
/// answer the preflight (the managed gateways create these preflight routes implicitly).
pub struct RouteMatch<'a, T> {
    pub value: &'a T,
    pub params: Vec<(String, String)>,
    pub method_matched: bool,
}

pub struct Router<T> {
    hosts: HashMap<Box<str>, Node<T>>,
    any_host: Node<T>,
}

struct Entry<T> {
    methods: MethodSet,
    value: T,
    /// The route's parameter names, in path order: what the captured values are called.
    names: Box<[Box<str>]>,
}

struct Node<T> {
    literal: HashMap<Box<str>, Node<T>>,
    param: Option<Box<Node<T>>>,
    catch_all: Option<Vec<Entry<T>>>,
    exact: Vec<Entry<T>>,
    prefix: Vec<Entry<T>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node { literal: HashMap::new(), param: None, catch_all: None, exact: Vec::new(), prefix: Vec::new() }
    }
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { hosts: HashMap::new(), any_host: Node::default() }
    }
}

enum Segment<'a> {
    Literal(&'a str),
    Param(&'a str),
    CatchAll(&'a str),
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn parse_template(template: &str) -> Result<Vec<Segment<'_>>, RouteError> {
    let parts: Vec<&str> = segments(template).collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, s) in parts.iter().enumerate() {
        let seg = if let Some(inner) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, rest) = match inner.strip_suffix('+') {
                Some(n) => (n, true),
                None => (inner, false),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(RouteError::BadSegment(template.into()));
            }
            if rest {
                if i + 1 != parts.len() {
                    return Err(RouteError::CatchAllNotLast(template.into()));
                }
                Segment::CatchAll(name)
            } else {
                Segment::Param(name)
            }
        } else if s.contains(['{', '}']) {
            return Err(RouteError::BadSegment(template.into()));
        } else {
            Segment::Literal(s)
        };
        out.push(seg);
    }
    Ok(out)
}

fn methods_overlap(a: &MethodSet, b: &MethodSet) -> Option<String> {
    match (a, b) {
        (None, _) | (_, None) => Some("ANY".into()),
        (Some(a), Some(b)) => a.iter().find(|m| b.contains(m)).map(|m| m.to_string()),
    }
}

fn method_ok(set: &MethodSet, m: &Method) -> bool {
    set.as_ref().is_none_or(|s| s.contains(m) || (*m == Method::HEAD && s.contains(&Method::GET)))
}

fn push_entry<T>(list: &mut Vec<Entry<T>>, template: &str, entry: Entry<T>) -> Result<(), RouteError> {
    if let Some(m) = list.iter().find_map(|e| methods_overlap(&e.methods, &entry.methods)) {
        return Err(RouteError::Duplicate(template.into(), m));
    }
    list.push(entry);
    Ok(())
}

impl<T> Router<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a route for `hosts` (empty or `*`: any host not claimed by another route's host).
    pub fn insert(
        &mut self,
        hosts: &[&str],
        methods: MethodSet,
        template: &str,
        prefix: bool,
        value: T,
    ) -> Result<(), RouteError>
    where
        T: Clone,
    {
        let specific: Vec<&str> = hosts.iter().copied().filter(|h| *h != "*").collect();
        if specific.is_empty() || specific.len() != hosts.len() {
            self.any_host.insert(template, methods.clone(), prefix, value.clone())?;
        }
        for h in specific {
            self.hosts.entry(h.to_ascii_lowercase().into_boxed_str()).or_default().insert(
                template,
                methods.clone(),
                prefix,
                value.clone(),
            )?;
        }
        Ok(())
    }

    /// Find the route for a request. `host` is lower-case and without port.
    pub fn find<'a>(&'a self, host: &str, method: &Method, path: &str) -> Option<RouteMatch<'a, T>> {
        let tree = self.hosts.get(host).unwrap_or(&self.any_host);
        let segs: Vec<&str> = segments(path).collect();
        let mut values = Vec::new();
        let hit = |e: &'a Entry<T>, values: Vec<String>, method_matched| {
            let params = e.names.iter().map(|n| n.to_string()).zip(values).collect();
            Some(RouteMatch { value: &e.value, params, method_matched })
        };
        if let Some(e) = tree.find(&segs, 0, method, &mut values) {
            return hit(e, values, true);
        }
        if *method == Method::OPTIONS {
            values.clear();
            // Any method: find the route the preflight is about.
            if let Some(e) = tree.find(&segs, 0, &Method::OPTIONS, &mut values).or_else(|| {
                values.clear();
                tree.find_any_method(&segs, 0, &mut values)
            }) {
                return hit(e, values, false);
            }
        }
        None
    }
}

impl<T> Node<T> {
    fn insert(
        &mut self,
        template: &str,
        methods: MethodSet,
        prefix: bool,
        value: T,
    ) -> Result<(), RouteError> {
        let segments = parse_template(template)?;
        let names = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(n) | Segment::CatchAll(n) => Some(Box::from(*n)),
                Segment::Literal(_) => None,
            })
            .collect();
        let entry = Entry { methods, value, names };
        let mut node = self;
        for seg in segments {
            node = match seg {
                Segment::Literal(s) => node.literal.entry(s.into()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_with(Box::default),
                Segment::CatchAll(_) => {
                    // A catch-all already covers every deeper path; prefix adds nothing.
                    return push_entry(node.catch_all.get_or_insert_with(Vec::new), template, entry);
                }
            };
        }
        let list = if prefix { &mut node.prefix } else { &mut node.exact };
        push_entry(list, template, entry)
    }

    fn find<'a>(
        &'a self,
        segs: &[&str],
        i: usize,
        method: &Method,
        values: &mut Vec<String>,
    ) -> Option<&'a Entry<T>> {
        self.walk(segs, i, values, &|list: &'a [Entry<T>]| {
            list.iter().find(|e| method_ok(&e.methods, method))
        })
    }

    fn find_any_method<'a>(
        &'a self,
        segs: &[&str],
        i: usize,
        values: &mut Vec<String>,
    ) -> Option<&'a Entry<T>> {
        self.walk(segs, i, values, &|list: &'a [Entry<T>]| list.first())
    }

    /// The entry for `segs[i..]` below this node, with the parameter values captured on the
    /// way in `values` (in path order, as the entry's `names`).
    fn walk<'a>(
        &'a self,
        segs: &[&str],
        i: usize,
        values: &mut Vec<String>,
        pick: &impl Fn(&'a [Entry<T>]) -> Option<&'a Entry<T>>,
    ) -> Option<&'a Entry<T>> {
        if i == segs.len() {
            if let Some(v) = pick(&self.exact) {
                return Some(v);
            }
        } else {
            if let Some(child) = self.literal.get(segs[i])
                && let Some(v) = child.walk(segs, i + 1, values, pick)
            {
                return Some(v);
            }
            if let Some(child) = &self.param {
                values.push(segs[i].to_string());
                if let Some(v) = child.walk(segs, i + 1, values, pick) {
                    return Some(v);
                }
                values.pop();
            }
            if let Some(list) = &self.catch_all
                && let Some(v) = pick(list)
            {
                values.push(segs[i..].join("/"));
                return Some(v);
            }
        }
        // Deeper prefix routes were tried first by the recursion, so the longest wins.
        pick(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str, bool, &'static str)]) -> Router<&'static str> {
        let mut r = Router::new();
        for (m, path, prefix, v) in routes {
            let methods = if *m == "ANY" { None } else { Some(vec![m.parse().unwrap()]) };
            r.insert(&[], methods, path, *prefix, *v).unwrap();
        }
        r
    }

    fn hit(r: &Router<&'static str>, m: &str, path: &str) -> Option<(&'static str, Vec<(String, String)>)> {
        r.find("h", &m.parse().unwrap(), path).filter(|m| m.method_matched).map(|m| (*m.value, m.params))
    }

    #[test]
    fn static_beats_template_beats_prefix() {
        let r = router(&[
            ("GET", "/users/me", false, "me"),
            ("GET", "/users/{id}", false, "user"),
            ("GET", "/users", true, "users-prefix"),
            ("GET", "/files/{path+}", false, "file"),
        ]);
        assert_eq!(hit(&r, "GET", "/users/me").unwrap().0, "me");
        assert_eq!(hit(&r, "GET", "/users/42"), Some(("user", vec![("id".into(), "42".into())])));
        assert_eq!(hit(&r, "GET", "/users/42/posts").unwrap().0, "users-prefix");
        assert_eq!(
            hit(&r, "GET", "/files/a/b/c.txt"),
            Some(("file", vec![("path".into(), "a/b/c.txt".into())]))
        );
        assert_eq!(hit(&r, "GET", "/files"), None);
        assert_eq!(hit(&r, "GET", "/nothing"), None);
    }

    #[test]
    fn longest_prefix_wins_and_method_is_checked() {
        let r = router(&[("ANY", "/api", true, "api"), ("POST", "/api/v2", true, "v2")]);
        assert_eq!(hit(&r, "POST", "/api/v2/x").unwrap().0, "v2");
        assert_eq!(hit(&r, "GET", "/api/v2/x").unwrap().0, "api");
        assert_eq!(hit(&r, "DELETE", "/api").unwrap().0, "api");
    }

    #[test]
    fn options_finds_the_route_for_a_preflight() {
        let r = router(&[("GET", "/x", false, "x")]);
        let m = r.find("h", &Method::OPTIONS, "/x").unwrap();
        assert_eq!((*m.value, m.method_matched), ("x", false));
        assert!(r.find("h", &Method::POST, "/x").is_none());
    }

    #[test]
    fn hosts_are_separate_and_star_is_the_fallback() {
        let mut r = Router::new();
        r.insert(&["a.example"], None, "/x", false, "a").unwrap();
        r.insert(&["*"], None, "/x", false, "any").unwrap();
        assert_eq!(*r.find("a.example", &Method::GET, "/x").unwrap().value, "a");
        assert_eq!(*r.find("b.example", &Method::GET, "/x").unwrap().value, "any");
    }

    #[test]
    fn routes_name_the_parameters_they_share_a_position_with_as_they_like() {
        let r = router(&[
            ("GET", "/flows/{Sid}", false, "flow"),
            ("GET", "/flows/{FlowSid}/runs/{Sid}", false, "run"),
            ("GET", "/flows/{FlowSid}/files/{path+}", false, "file"),
        ]);
        assert_eq!(hit(&r, "GET", "/flows/F1"), Some(("flow", vec![("Sid".into(), "F1".into())])));
        let run = vec![("FlowSid".into(), "F1".into()), ("Sid".into(), "R2".into())];
        assert_eq!(hit(&r, "GET", "/flows/F1/runs/R2"), Some(("run", run)));
        let file = vec![("FlowSid".into(), "F1".into()), ("path".into(), "a/b".into())];
        assert_eq!(hit(&r, "GET", "/flows/F1/files/a/b"), Some(("file", file)));
    }

    #[test]
    fn bad_templates_and_duplicates_are_refused() {
        let mut r: Router<u8> = Router::new();
        assert!(matches!(r.insert(&[], None, "/a/{x+}/b", false, 1), Err(RouteError::CatchAllNotLast(_))));
        assert!(matches!(r.insert(&[], None, "/a/x{y}", false, 1), Err(RouteError::BadSegment(_))));
        r.insert(&[], Some(vec![Method::GET]), "/a/{id}", false, 1).unwrap();
        // The same route whatever its parameter is called.
        assert!(matches!(r.insert(&[], None, "/a/{name}", false, 2), Err(RouteError::Duplicate(..))));
        assert!(matches!(
            r.insert(&[], Some(vec![Method::GET]), "/a/{id}", false, 3),
            Err(RouteError::Duplicate(..))
        ));
        r.insert(&[], Some(vec![Method::POST]), "/a/{id}", false, 4).unwrap();
    }
}
