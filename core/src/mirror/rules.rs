//! A mirror's rules and the plan of one pass.
//!
//! Both sides are listed as [`Artifact`]s (a store's files by path, a repository's
//! tags); [`Rules::plan`] compares them: what to copy (missing or different at the
//! destination), what to delete at the destination (beyond retention), what is in
//! sync. Pure, so every rule is tested without a server.
//!
//! Names are matched the way filuxe users expect: a glob without `/` matches the
//! file name, one with `/` the whole path (`*` stays inside a component, `**`
//! crosses them). A name's version is the first capture of the version regex
//! (default: the first `MAJOR.MINOR.PATCH[-pre]`); its group (product) is the joined
//! captures of the first matching group regex (filuxe's `group`), or, without group
//! regexes, the name with its version cut out. Groups are per directory.

use std::collections::{BTreeMap, HashMap};

pub use crate::config::mirrors::{check_glob, GlobError};
use crate::config::MirrorConfig;
use crate::version::PolicyError;
use regex::Regex;
use semver::{Version, VersionReq};
use serde::Serialize;

/// The default version pattern: `1.2.3`, `1.2.3-rc.1`.
const DEFAULT_VERSION: &str = r"(\d+\.\d+\.\d+(?:-[0-9A-Za-z]+(?:\.\d+)*)?)";

/// One thing a side holds: a file (by path) or a tag.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Artifact {
    pub name: String,
    pub size: u64,
    /// Seconds since the epoch (0 when the side does not say).
    pub time: f64,
    /// What identifies the content: a file's SHA-256, a tag's manifest digest (with
    /// its signature tags). `None` when the side does not say.
    pub digest: Option<String>,
}

impl Artifact {
    /// Whether `other` (at the destination) holds the same content.
    pub(crate) fn same_as(&self, other: &Artifact) -> bool {
        if self.size != other.size {
            return false;
        }
        match (&self.digest, &other.digest) {
            (Some(a), Some(b)) => a == b,
            // filuxe's rule when checksums are unknown: same size and time.
            _ => (self.time - other.time).abs() < 0.001,
        }
    }
}

/// The compiled rules of one mirror.
pub struct Rules {
    include: Vec<Glob>,
    exclude: Vec<Glob>,
    version: Regex,
    groups: Vec<Regex>,
    range: Option<VersionReq>,
    prerelease: bool,
    keep_last: Option<usize>,
    max_age: Option<f64>,
}

/// Why a mirror's rules do not compile.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The version regex or a group regex.
    #[error("regex {pattern:?}: {source}")]
    Regex { pattern: String, source: regex::Error },
    /// `version.range`.
    #[error(transparent)]
    Range(PolicyError),
    /// `retention.maxAge`.
    #[error(transparent)]
    MaxAge(PolicyError),
}

/// What one pass does.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Source artifacts missing or different at the destination.
    pub copy: Vec<Artifact>,
    /// Destination artifacts beyond retention.
    pub delete: Vec<Artifact>,
    /// Names present and identical on both sides.
    pub in_sync: Vec<String>,
    /// Highest version among what the destination keeps (after the pass).
    pub latest_version: Option<String>,
}

impl Rules {
    /// Compiles a mirror's rules (the config was validated: patterns compile).
    pub fn new(config: &MirrorConfig) -> Result<Self, RuleError> {
        let version = config.version.clone().unwrap_or_default();
        let compile = |re: &str| Regex::new(re).map_err(|source| RuleError::Regex { pattern: re.to_owned(), source });
        let range = version.range.as_deref().map(crate::version::parse_range).transpose().map_err(RuleError::Range)?;
        let retention = config.retention.clone().unwrap_or_default();
        let max_age =
            retention.max_age.as_deref().map(crate::version::parse_duration).transpose().map_err(RuleError::MaxAge)?;
        let max_age = max_age.map(|d| d.as_secs_f64());
        Ok(Self {
            include: config.include.iter().map(|g| Glob::new(g)).collect(),
            exclude: config.exclude.iter().map(|g| Glob::new(g)).collect(),
            version: compile(version.regex.as_deref().unwrap_or(DEFAULT_VERSION))?,
            groups: version.groups.iter().map(|g| compile(g)).collect::<Result<_, _>>()?,
            range,
            prerelease: version.prerelease,
            keep_last: retention.keep_last.map(|n| n as usize),
            max_age,
        })
    }

    /// Whether the include/exclude globs and the version range select `name`.
    pub fn selects(&self, name: &str) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|g| g.matches(name));
        if !included || self.exclude.iter().any(|g| g.matches(name)) {
            return false;
        }
        match &self.range {
            None => true,
            Some(req) => self.version_of(name).is_some_and(|v| crate::version::matches(req, &v, self.prerelease)),
        }
    }

    /// The version in `name` (its file name part), if any.
    pub fn version_of(&self, name: &str) -> Option<Version> {
        let base = base_name(name);
        let text = self.version.captures(base)?.get(1)?.as_str();
        crate::version::parse_tag(text, true)
    }

    /// The retention group of `name`: directory plus product key.
    pub(crate) fn group_of(&self, name: &str) -> String {
        let (dir, base) = match name.rsplit_once('/') {
            Some((dir, base)) => (dir, base),
            None => ("", name),
        };
        let key = if self.groups.is_empty() {
            match self.version.captures(base).and_then(|c| c.get(1)) {
                Some(m) => format!("{}*{}", &base[..m.start()], &base[m.end()..]),
                None => base.to_owned(),
            }
        } else {
            self.groups
                .iter()
                .find_map(|re| {
                    let caps = re.captures(base).filter(|c| c.get(0).is_some_and(|m| m.start() == 0))?;
                    let parts: Option<Vec<&str>> = (1..caps.len()).map(|i| caps.get(i).map(|m| m.as_str())).collect();
                    parts.map(|p| p.join(":"))
                })
                .unwrap_or_else(|| "ungrouped".to_owned())
        };
        format!("{dir}/{key}")
    }

    /// Compares the sides under the rules at time `now`.
    pub fn plan(&self, source: &[Artifact], destination: &[Artifact], now: f64) -> Plan {
        let wanted: Vec<&Artifact> = source.iter().filter(|a| self.selects(&a.name)).collect();
        let managed: Vec<&Artifact> = destination.iter().filter(|a| self.selects(&a.name)).collect();
        let kept = self.kept(wanted.iter().chain(managed.iter()).copied(), now);
        let at_destination: HashMap<&str, &Artifact> = destination.iter().map(|a| (a.name.as_str(), a)).collect();
        let mut plan = Plan::default();
        for a in wanted.iter().filter(|a| kept.contains_key(a.name.as_str())) {
            match at_destination.get(a.name.as_str()) {
                Some(d) if a.same_as(d) => plan.in_sync.push(a.name.clone()),
                _ => plan.copy.push((*a).clone()),
            }
        }
        plan.delete = managed.iter().filter(|a| !kept.contains_key(a.name.as_str())).map(|a| (*a).clone()).collect();
        plan.latest_version = kept.values().flatten().max().map(|v| v.to_string());
        plan
    }

    /// The names retention keeps among `candidates` (name → version, if any).
    fn kept<'a>(&self, candidates: impl Iterator<Item = &'a Artifact>, now: f64) -> HashMap<&'a str, Option<Version>> {
        let mut by_group: BTreeMap<String, Vec<(&'a Artifact, Option<Version>)>> = BTreeMap::new();
        for a in candidates {
            by_group.entry(self.group_of(&a.name)).or_default().push((a, self.version_of(&a.name)));
        }
        let mut kept = HashMap::new();
        for (_, mut members) in by_group {
            members.sort_by(|(a, va), (b, vb)| vb.cmp(va).then(b.time.total_cmp(&a.time)));
            let mut versions_seen: Vec<&Option<Version>> = Vec::new();
            for (a, version) in &members {
                if !versions_seen.contains(&version) {
                    versions_seen.push(version);
                }
                let rank = versions_seen.len();
                let by_count = match self.keep_last {
                    None => None,
                    // Names without a version are not counted (filuxe cannot sort them).
                    Some(_) if version.is_none() => Some(true),
                    Some(n) => Some(rank <= n),
                };
                let by_age = self.max_age.map(|age| a.time <= 0.0 || now - a.time <= age);
                let keep = match (by_count, by_age) {
                    (None, None) => true,
                    (Some(c), None) => c,
                    (None, Some(t)) => t,
                    (Some(c), Some(t)) => c || t,
                };
                if keep {
                    kept.insert(a.name.as_str(), version.clone());
                }
            }
        }
        kept
    }
}

fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// A glob: `*` and `?` within a path component, `**` across components. Without a
/// `/` it matches the file name, with one the whole path.
struct Glob {
    regex: Regex,
    whole_path: bool,
}

impl Glob {
    fn new(pattern: &str) -> Self {
        let mut re = String::from("^");
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    if chars.peek() == Some(&'/') {
                        chars.next();
                        re.push_str("(?:.*/)?");
                    } else {
                        re.push_str(".*");
                    }
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        Self { regex: Regex::new(&re).expect("an escaped glob is a valid regex"), whole_path: pattern.contains('/') }
    }

    fn matches(&self, name: &str) -> bool {
        self.regex.is_match(if self.whole_path { name } else { base_name(name) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MirrorEndpoint, RetentionConfig, VersionFilter};

    fn config() -> MirrorConfig {
        MirrorConfig {
            name: "m".into(),
            source: MirrorEndpoint::default(),
            destination: MirrorEndpoint::default(),
            include: vec![],
            exclude: vec![],
            version: None,
            retention: None,
            interval: "1m".into(),
            suspend: false,
            dry_run: false,
        }
    }

    fn file(name: &str, size: u64, time: f64, digest: Option<&str>) -> Artifact {
        Artifact { name: name.into(), size, time, digest: digest.map(str::to_owned) }
    }

    fn names(list: &[Artifact]) -> Vec<&str> {
        let mut v: Vec<&str> = list.iter().map(|a| a.name.as_str()).collect();
        v.sort();
        v
    }

    #[test]
    fn filters_that_cannot_work_name_their_field() {
        let field = |v: VersionFilter| v.check().unwrap_err().field;
        assert_eq!(field(VersionFilter { regex: Some("(".into()), ..Default::default() }), "version.regex");
        assert_eq!(field(VersionFilter { regex: Some(r"\d+".into()), ..Default::default() }), "version.regex");
        let groups = vec!["(.*)".into(), "[".into()];
        assert_eq!(field(VersionFilter { groups, ..Default::default() }), "version.groups[1]");
        assert_eq!(field(VersionFilter { range: Some("newest".into()), ..Default::default() }), "version.range");
        VersionFilter {
            regex: Some(r":(\d+\.\d+\.\d+):".into()),
            groups: vec![r"(.*?):\d+\.\d+\.\d+:(.*)".into()],
            range: Some(">=1.2, <2".into()),
            prerelease: false,
        }
        .check()
        .unwrap();
    }

    #[test]
    fn rules_that_do_not_compile_say_which_part() {
        let refused = |version: Option<VersionFilter>, max_age: Option<&str>| {
            let mut c = config();
            c.version = version;
            c.retention = Some(RetentionConfig { keep_last: None, max_age: max_age.map(str::to_owned) });
            Rules::new(&c).err().expect("refused")
        };
        let groups = Some(VersionFilter { groups: vec!["(.*)".into(), "(".into()], ..Default::default() });
        assert!(matches!(refused(groups, None), RuleError::Regex { ref pattern, .. } if pattern == "("));
        let range = Some(VersionFilter { range: Some("newest".into()), ..Default::default() });
        assert!(matches!(refused(range, None), RuleError::Range(PolicyError::Range { .. })));
        assert!(matches!(refused(None, Some("a while")), RuleError::MaxAge(PolicyError::Duration(_))));
    }

    #[test]
    fn globs() {
        let g = Glob::new("*.zip");
        assert!(g.matches("a.zip") && g.matches("dir/sub/a.zip") && !g.matches("a.zap"));
        let g = Glob::new("first/*.zip");
        assert!(g.matches("first/a.zip") && !g.matches("first/x/a.zip") && !g.matches("a.zip"));
        let g = Glob::new("**/unversioned_?.zip");
        assert!(
            g.matches("unversioned_a.zip") && g.matches("x/y/unversioned_b.zip") && !g.matches("unversioned_ab.zip")
        );
        assert!(Glob::new("v*").matches("v1.2.3") && !Glob::new("v*").matches("1.2.3"));
        assert!(Glob::new("a+b(c)").matches("a+b(c)"));
    }

    #[test]
    fn filuxe_versions_and_groups() {
        let mut c = config();
        c.version = Some(VersionFilter {
            regex: Some(r":(\d+\.\d+\.\d+):".into()),
            groups: vec![r"(.*?):\d+\.\d+\.\d+:(.*)".into()],
            ..Default::default()
        });
        let r = Rules::new(&c).unwrap();
        assert_eq!(r.version_of("first/a:1.2.3:anytrack:anyarch:unknown.zip"), Some(Version::new(1, 2, 3)));
        assert_eq!(r.group_of("first/a:1.2.3:anytrack:anyarch:unknown.zip"), "first/a:anytrack:anyarch:unknown.zip");
        assert_eq!(r.group_of("first/b:2.4.3:anytrack:anyarch:unknown.zip"), "first/b:anytrack:anyarch:unknown.zip");
        assert_eq!(r.group_of("notazip.zap"), "/ungrouped");
        let default = Rules::new(&config()).unwrap();
        assert_eq!(default.version_of("app-1.2.3-rc.1.tar.gz"), Some(Version::parse("1.2.3-rc.1").unwrap()));
        assert_eq!(default.version_of("v2.0.0"), Some(Version::new(2, 0, 0)));
        assert_eq!(default.group_of("d/app-1.2.3.zip"), "d/app-*.zip");
        assert_eq!(default.version_of("unversioned.zip"), None);
    }

    #[test]
    fn plan_copies_missing_and_different_and_keeps_last_n_per_group() {
        let mut c = config();
        c.include = vec!["*.zip".into()];
        c.exclude = vec!["unversioned_*".into()];
        c.version = Some(VersionFilter {
            regex: Some(r":(\d+\.\d+\.\d+):".into()),
            groups: vec![r"(.*?):\d+\.\d+\.\d+:(.*)".into()],
            ..Default::default()
        });
        c.retention = Some(RetentionConfig { keep_last: Some(2), max_age: None });
        let r = Rules::new(&c).unwrap();
        let source = vec![
            file("a:1.0.0:t:x.zip", 10, 1.0, Some("a1")),
            file("a:2.0.0:t:x.zip", 10, 2.0, Some("a2")),
            file("a:3.0.0:t:x.zip", 10, 3.0, Some("a3")),
            file("b:1.0.0:t:x.zip", 10, 1.0, Some("b1")),
            file("unversioned_a.zip", 10, 1.0, None),
            file("notes.txt", 1, 1.0, None),
        ];
        let destination = vec![
            file("a:1.0.0:t:x.zip", 10, 1.0, Some("a1")),
            file("a:2.0.0:t:x.zip", 10, 2.0, Some("OLD")),
            file("other.bin", 5, 1.0, None),
        ];
        let plan = r.plan(&source, &destination, 10.0);
        assert_eq!(names(&plan.copy), ["a:2.0.0:t:x.zip", "a:3.0.0:t:x.zip", "b:1.0.0:t:x.zip"]);
        assert_eq!(names(&plan.delete), ["a:1.0.0:t:x.zip"]);
        assert!(plan.in_sync.is_empty());
        assert_eq!(plan.latest_version.as_deref(), Some("3.0.0"));
        // Once copied: in sync, nothing to do, "other.bin" (not selected) untouched.
        let after: Vec<Artifact> = source[1..4].iter().cloned().chain([destination[2].clone()]).collect();
        let plan = r.plan(&source, &after, 10.0);
        assert!(plan.copy.is_empty() && plan.delete.is_empty(), "{plan:?}");
        assert_eq!(plan.in_sync.len(), 3);
    }

    #[test]
    fn version_range_and_max_age() {
        let mut c = config();
        c.version = Some(VersionFilter { range: Some(">=2".into()), ..Default::default() });
        c.retention = Some(RetentionConfig { keep_last: None, max_age: Some("1h".into()) });
        let r = Rules::new(&c).unwrap();
        let now = 100_000.0;
        let source = vec![
            file("app-1.9.0.zip", 1, now, None),
            file("app-2.0.0.zip", 1, now - 7200.0, None),
            file("app-2.1.0.zip", 1, now - 60.0, None),
            file("app-3.0.0-rc.1.zip", 1, now, None),
            file("readme.txt", 1, now, None),
        ];
        let destination = vec![file("app-2.0.0.zip", 1, now - 7200.0, None)];
        let plan = r.plan(&source, &destination, now);
        assert_eq!(names(&plan.copy), ["app-2.1.0.zip"]);
        assert_eq!(names(&plan.delete), ["app-2.0.0.zip"]);
    }

    #[test]
    fn same_content_by_digest_or_by_size_and_time() {
        let a = file("f", 10, 5.0, Some("x"));
        assert!(a.same_as(&file("f", 10, 9.0, Some("x"))));
        assert!(!a.same_as(&file("f", 10, 5.0, Some("y"))));
        assert!(a.same_as(&file("f", 10, 5.0, None)));
        assert!(!a.same_as(&file("f", 10, 6.0, None)));
        assert!(!a.same_as(&file("f", 11, 5.0, Some("x"))));
    }
}
