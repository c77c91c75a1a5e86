//! AWS IAM identity policies: parsing with precise errors, and the decision as a pure function.
//!
//! Evaluation follows IAM's logic: default deny; a matching Deny statement anywhere wins over
//! any Allow; statement order does not matter. A statement matches when its Action (or
//! NotAction), its Resource (or NotResource) and every condition in its Condition block hold.
//! Conditions follow the IAM reference: a key absent from the request makes a condition false,
//! except negated operators (true), `…IfExists` (true), `Null`, and the set qualifiers
//! (`ForAllValues:` true, `ForAnyValue:` false on an absent or empty key).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

/// A parsed policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Where it came from (file name), for messages.
    pub source: String,
    pub statements: Vec<Statement>,
    /// Policy variables are expanded only with `Version: 2012-10-17`.
    pub variables: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub index: usize,
    pub sid: Option<String>,
    pub effect: Effect,
    pub actions: Vec<String>,
    pub not_action: bool,
    pub resources: Vec<String>,
    pub not_resource: bool,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetQualifier {
    None,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnNotEquals,
    ArnLike,
    ArnNotLike,
    Null,
}

/// A test of whether an operator can read a condition value.
type ValueCheck = fn(&str) -> bool;

const OPERATORS: &[(&str, Operator)] = &[
    ("StringEquals", Operator::StringEquals),
    ("StringNotEquals", Operator::StringNotEquals),
    ("StringEqualsIgnoreCase", Operator::StringEqualsIgnoreCase),
    (
        "StringNotEqualsIgnoreCase",
        Operator::StringNotEqualsIgnoreCase,
    ),
    ("StringLike", Operator::StringLike),
    ("StringNotLike", Operator::StringNotLike),
    ("NumericEquals", Operator::NumericEquals),
    ("NumericNotEquals", Operator::NumericNotEquals),
    ("NumericLessThan", Operator::NumericLessThan),
    ("NumericLessThanEquals", Operator::NumericLessThanEquals),
    ("NumericGreaterThan", Operator::NumericGreaterThan),
    (
        "NumericGreaterThanEquals",
        Operator::NumericGreaterThanEquals,
    ),
    ("DateEquals", Operator::DateEquals),
    ("DateNotEquals", Operator::DateNotEquals),
    ("DateLessThan", Operator::DateLessThan),
    ("DateLessThanEquals", Operator::DateLessThanEquals),
    ("DateGreaterThan", Operator::DateGreaterThan),
    ("DateGreaterThanEquals", Operator::DateGreaterThanEquals),
    ("Bool", Operator::Bool),
    ("IpAddress", Operator::IpAddress),
    ("NotIpAddress", Operator::NotIpAddress),
    ("ArnEquals", Operator::ArnEquals),
    ("ArnNotEquals", Operator::ArnNotEquals),
    ("ArnLike", Operator::ArnLike),
    ("ArnNotLike", Operator::ArnNotLike),
    ("Null", Operator::Null),
];

impl Operator {
    fn negated(self) -> bool {
        use Operator::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | NumericNotEquals
                | DateNotEquals
                | NotIpAddress
                | ArnNotEquals
                | ArnNotLike
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub operator: Operator,
    pub set: SetQualifier,
    pub if_exists: bool,
    /// The key as written (matched case-insensitively).
    pub key: String,
    pub values: Vec<String>,
}

/// Why a policy document was refused: the file, the statement index (when in a statement) and
/// the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {reason}", statement.map(|i| format!(": Statement[{i}]")).unwrap_or_default())]
pub struct PolicyError {
    pub file: String,
    pub statement: Option<usize>,
    pub reason: String,
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                _ => Err(format!("{what} must be a string or a list of strings")),
            })
            .collect(),
        Value::Array(_) => Err(format!("{what} must not be empty")),
        _ => Err(format!("{what} must be a string or a list of strings")),
    }
}

fn condition_values(v: &Value) -> Result<Vec<String>, String> {
    let one = |x: &Value| match x {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err("condition values must be strings, numbers or booleans".to_string()),
    };
    match v {
        Value::Array(a) if !a.is_empty() => a.iter().map(one).collect(),
        Value::Array(_) => Err("condition values must not be empty".into()),
        x => Ok(vec![one(x)?]),
    }
}

impl Policy {
    /// Parses a policy document. `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Policy, PolicyError> {
        let err = |statement: Option<usize>, reason: String| PolicyError {
            file: source.to_string(),
            statement,
            reason,
        };
        let doc: Value =
            serde_json::from_str(text).map_err(|e| err(None, format!("not valid JSON: {e}")))?;
        let obj = doc
            .as_object()
            .ok_or_else(|| err(None, "a policy is a JSON object".into()))?;
        for k in obj.keys() {
            if !["Version", "Id", "Statement"].contains(&k.as_str()) {
                return Err(err(None, format!("unknown element {k:?}")));
            }
        }
        let variables = match obj.get("Version") {
            Some(Value::String(v)) if v == "2012-10-17" => true,
            Some(Value::String(v)) if v == "2008-10-17" => false,
            Some(_) => {
                return Err(err(
                    None,
                    "Version must be \"2012-10-17\" or \"2008-10-17\"".into(),
                ))
            }
            None => false,
        };
        let stmts: Vec<&Value> = match obj.get("Statement") {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(v @ Value::Object(_)) => vec![v],
            _ => return Err(err(None, "Statement must be an object or a list".into())),
        };
        let mut statements = Vec::new();
        for (i, s) in stmts.into_iter().enumerate() {
            let e = |r: String| err(Some(i), r);
            let o = s
                .as_object()
                .ok_or_else(|| e("a statement is a JSON object".into()))?;
            for k in o.keys() {
                match k.as_str() {
                    "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource"
                    | "Condition" => {}
                    "Principal" | "NotPrincipal" => {
                        return Err(e(format!(
                            "{k} does not belong in a tenant's identity policy (the tenant is the principal)"
                        )))
                    }
                    _ => return Err(e(format!("unknown element {k:?}"))),
                }
            }
            let sid = match o.get("Sid") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(e("Sid must be a string".into())),
                None => None,
            };
            let effect = match o.get("Effect").and_then(Value::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => return Err(e("Effect must be \"Allow\" or \"Deny\"".into())),
            };
            let (actions, not_action) = match (o.get("Action"), o.get("NotAction")) {
                (Some(a), None) => (strings(a, "Action").map_err(e)?, false),
                (None, Some(a)) => (strings(a, "NotAction").map_err(e)?, true),
                _ => return Err(e("exactly one of Action and NotAction is required".into())),
            };
            for a in &actions {
                let lower = a.to_ascii_lowercase();
                if lower != "*" && !lower.starts_with("s3:") {
                    return Err(e(format!("action {a:?} is not an S3 action (s3:… or *)")));
                }
            }
            let (resources, not_resource) = match (o.get("Resource"), o.get("NotResource")) {
                (Some(r), None) => (strings(r, "Resource").map_err(e)?, false),
                (None, Some(r)) => (strings(r, "NotResource").map_err(e)?, true),
                _ => {
                    return Err(e(
                        "exactly one of Resource and NotResource is required".into()
                    ))
                }
            };
            for r in &resources {
                if r != "*" && !r.starts_with("arn:aws:s3:::") {
                    return Err(e(format!(
                        "resource {r:?} is not an S3 ARN (arn:aws:s3:::bucket[/key] or *)"
                    )));
                }
            }
            let mut conditions = Vec::new();
            if let Some(c) = o.get("Condition") {
                let c = c
                    .as_object()
                    .ok_or_else(|| e("Condition must be an object".into()))?;
                for (op_name, keys) in c {
                    let (set, rest) = if let Some(r) = op_name.strip_prefix("ForAnyValue:") {
                        (SetQualifier::ForAnyValue, r)
                    } else if let Some(r) = op_name.strip_prefix("ForAllValues:") {
                        (SetQualifier::ForAllValues, r)
                    } else {
                        (SetQualifier::None, op_name.as_str())
                    };
                    let (if_exists, base) = match rest.strip_suffix("IfExists") {
                        Some(b) => (true, b),
                        None => (false, rest),
                    };
                    let operator = OPERATORS
                        .iter()
                        .find(|(n, _)| *n == base)
                        .map(|(_, o)| *o)
                        .ok_or_else(|| e(format!("unknown condition operator {op_name:?}")))?;
                    if operator == Operator::Null && (if_exists || set != SetQualifier::None) {
                        return Err(e(format!("{op_name:?}: Null takes no qualifier")));
                    }
                    let keys = keys
                        .as_object()
                        .ok_or_else(|| e(format!("{op_name}: expected an object of keys")))?;
                    for (key, vals) in keys {
                        let values = condition_values(vals)
                            .map_err(|r| e(format!("{op_name}/{key}: {r}")))?;
                        if operator == Operator::Null
                            && values.iter().any(|v| {
                                !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false")
                            })
                        {
                            return Err(e(format!("Null/{key}: values are \"true\" or \"false\"")));
                        }
                        // A value its operator cannot read would never match: in a Deny,
                        // a silent hole. Refused here, as IAM refuses it.
                        use Operator::*;
                        let reads: Option<(&str, ValueCheck)> = match operator {
                            NumericEquals
                            | NumericNotEquals
                            | NumericLessThan
                            | NumericLessThanEquals
                            | NumericGreaterThan
                            | NumericGreaterThanEquals => Some(("a number", |v| {
                                v.trim().parse::<f64>().is_ok_and(f64::is_finite)
                            })),
                            DateEquals
                            | DateNotEquals
                            | DateLessThan
                            | DateLessThanEquals
                            | DateGreaterThan
                            | DateGreaterThanEquals => {
                                Some(("an ISO 8601 date or an epoch time", |v| {
                                    parse_date(v).is_some()
                                }))
                            }
                            Bool => Some(("\"true\" or \"false\"", |v| {
                                v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")
                            })),
                            _ => None,
                        };
                        if let Some((kind, ok)) = reads {
                            if let Some(v) = values.iter().find(|v| !ok(v)) {
                                return Err(e(format!("{op_name}/{key}: {v:?} is not {kind}")));
                            }
                        }
                        if matches!(operator, Operator::IpAddress | Operator::NotIpAddress) {
                            for v in &values {
                                if parse_cidr(v).is_none() {
                                    return Err(e(format!(
                                        "{op_name}/{key}: {v:?} is not an IP address or CIDR block"
                                    )));
                                }
                            }
                        }
                        conditions.push(Condition {
                            operator,
                            set,
                            if_exists,
                            key: key.clone(),
                            values,
                        });
                    }
                }
            }
            statements.push(Statement {
                index: i,
                sid,
                effect,
                actions,
                not_action,
                resources,
                not_resource,
                conditions,
            });
        }
        if statements.is_empty() {
            return Err(err(None, "Statement must not be empty".into()));
        }
        Ok(Policy {
            source: source.to_string(),
            statements,
            variables,
        })
    }

    /// The Allow statements whose resources name none of `buckets` (the buckets a tenant
    /// with a bucket table sees): usually the upstream bucket written where the tenant's own
    /// name belongs. Such a statement allows nothing. Policy variables count as wildcards.
    pub fn allows_outside(&self, buckets: &[&str]) -> Vec<usize> {
        let reaches = |r: &str| {
            if r == "*" {
                return true;
            }
            let Some(rest) = r.strip_prefix("arn:aws:s3:::") else {
                return false;
            };
            let bucket_part = rest.split('/').next().unwrap_or("");
            let mut pattern = String::new();
            let mut tail = bucket_part;
            while let Some(i) = tail.find("${") {
                pattern.push_str(&tail[..i]);
                pattern.push('*');
                tail = tail[i..].find('}').map_or("", |j| &tail[i + j + 1..]);
            }
            pattern.push_str(tail);
            let tokens = literal_tokens(&pattern);
            buckets.iter().any(|b| glob(&tokens, b))
        };
        self.statements
            .iter()
            .filter(|s| s.effect == Effect::Allow && !s.not_resource)
            .filter(|s| !s.resources.iter().any(|r| reaches(r)))
            .map(|s| s.index)
            .collect()
    }

    /// Problems that are not errors: a policy that grants nothing, and the classic
    /// `Bool aws:MultiFactorAuthPresent false` Deny that never applies (the key is absent, not
    /// false, when a request carries no MFA).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for s in &self.statements {
            for c in &s.conditions {
                let k = c.key.to_ascii_lowercase();
                if !SUPPLIED_KEYS.contains(&k.as_str())
                    && !SUPPLIED_PREFIXES.iter().any(|p| k.starts_with(p))
                {
                    w.push(format!(
                        "{}: Statement[{}]: condition key {:?} is never set by Chmura: a positive operator on it never matches, a negated one always does",
                        self.source, s.index, c.key
                    ));
                }
            }
        }
        if self.statements.iter().all(|s| s.effect == Effect::Deny) {
            w.push(format!(
                "{}: grants nothing (no Allow statement)",
                self.source
            ));
        }
        for s in &self.statements {
            for c in &s.conditions {
                if s.effect == Effect::Deny
                    && c.operator == Operator::Bool
                    && !c.if_exists
                    && c.key.eq_ignore_ascii_case("aws:MultiFactorAuthPresent")
                    && c.values.iter().any(|v| v.eq_ignore_ascii_case("false"))
                {
                    w.push(format!(
                        "{}: Statement[{}]: Bool aws:MultiFactorAuthPresent \"false\" never matches a request without MFA (the key is absent then); use BoolIfExists",
                        self.source, s.index
                    ));
                }
            }
        }
        w
    }
}

/// Condition keys Chmura sets (lowercase), and key prefixes.
pub const SUPPLIED_KEYS: &[&str] = &[
    "aws:username",
    "aws:userid",
    "aws:sourceip",
    "aws:securetransport",
    "aws:currenttime",
    "aws:epochtime",
    "aws:multifactorauthpresent",
    "aws:multifactorauthage",
    "s3:prefix",
    "s3:delimiter",
    "s3:max-keys",
    "s3:versionid",
    "s3:requestobjecttagkeys",
];
pub const SUPPLIED_PREFIXES: &[&str] = &["s3:existingobjecttag/", "s3:requestobjecttag/"];

/// What a request asks for, in IAM terms.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `s3:GetObject`, …
    pub action: &'a str,
    /// `arn:aws:s3:::bucket/key`, `arn:aws:s3:::bucket` or `*`.
    pub resource: &'a str,
    /// Condition keys, names lowercased, each with its values.
    pub context: &'a BTreeMap<String, Vec<String>>,
}

/// The outcome, with the statement that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        source: String,
        statement: usize,
    },
    Deny {
        source: String,
        statement: usize,
    },
    /// No statement allowed it.
    ImplicitDeny,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// The decision over every policy of a tenant.
pub fn decide(policies: &[Policy], req: &Request<'_>) -> Decision {
    let mut allow = None;
    for p in policies {
        for s in &p.statements {
            if !statement_matches(p, s, req) {
                continue;
            }
            match s.effect {
                Effect::Deny => {
                    return Decision::Deny {
                        source: p.source.clone(),
                        statement: s.index,
                    }
                }
                Effect::Allow => {
                    allow.get_or_insert(Decision::Allow {
                        source: p.source.clone(),
                        statement: s.index,
                    });
                }
            }
        }
    }
    allow.unwrap_or(Decision::ImplicitDeny)
}

fn statement_matches(p: &Policy, s: &Statement, req: &Request<'_>) -> bool {
    let action_hit = s.actions.iter().any(|a| {
        glob(
            &literal_tokens(&a.to_ascii_lowercase()),
            &req.action.to_ascii_lowercase(),
        )
    });
    if action_hit == s.not_action {
        return false;
    }
    let resource_hit = s.resources.iter().any(|r| match expand(p, r, req.context) {
        Some(tokens) => glob(&tokens, req.resource),
        None => false,
    });
    if resource_hit == s.not_resource {
        return false;
    }
    s.conditions
        .iter()
        .all(|c| condition_holds(p, c, req.context))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    Star,
    Question,
}

fn literal_tokens(s: &str) -> Vec<Tok> {
    s.chars()
        .map(|c| match c {
            '*' => Tok::Star,
            '?' => Tok::Question,
            c => Tok::Lit(c),
        })
        .collect()
}

/// Expands policy variables (`${aws:username}`, `${*}`, `${?}`, `${$}`; with a default
/// `${key, 'x'}`) into tokens, substituted values being literal. `None`: a variable without a
/// value (the element then matches nothing).
fn expand(p: &Policy, s: &str, ctx: &BTreeMap<String, Vec<String>>) -> Option<Vec<Tok>> {
    if !p.variables {
        return Some(literal_tokens(s));
    }
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.extend(literal_tokens(&rest[..i]));
        let Some(j) = rest[i..].find('}') else {
            out.extend(literal_tokens(&rest[i..]));
            return Some(out);
        };
        let inner = rest[i + 2..i + j].trim();
        match inner {
            "*" => out.push(Tok::Lit('*')),
            "?" => out.push(Tok::Lit('?')),
            "$" => out.push(Tok::Lit('$')),
            _ => {
                let (name, default) = match inner.split_once(',') {
                    Some((n, d)) => (n.trim(), Some(d.trim().trim_matches('\'').to_string())),
                    None => (inner, None),
                };
                let value = ctx
                    .get(&name.to_ascii_lowercase())
                    .and_then(|v| v.first().cloned())
                    .or(default)?;
                out.extend(value.chars().map(Tok::Lit));
            }
        }
        rest = &rest[i + j + 1..];
    }
    out.extend(literal_tokens(rest));
    Some(out)
}

/// `*` any run (also across `/`), `?` one character.
fn glob(pat: &[Tok], s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let (mut p, mut i) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while i < chars.len() {
        match pat.get(p) {
            Some(Tok::Question) => {
                p += 1;
                i += 1;
            }
            Some(Tok::Lit(c)) if *c == chars[i] => {
                p += 1;
                i += 1;
            }
            Some(Tok::Star) => {
                star = Some(p);
                mark = i;
                p += 1;
            }
            _ => match star {
                Some(sp) => {
                    p = sp + 1;
                    mark += 1;
                    i = mark;
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..].iter().all(|t| *t == Tok::Star)
}

fn condition_holds(p: &Policy, c: &Condition, ctx: &BTreeMap<String, Vec<String>>) -> bool {
    let values = ctx.get(&c.key.to_ascii_lowercase());
    if c.operator == Operator::Null {
        let absent = values.is_none_or(|v| v.is_empty());
        return c
            .values
            .iter()
            .any(|v| v.eq_ignore_ascii_case("true") == absent);
    }
    let present: &[String] = match values {
        Some(v) if !v.is_empty() => v,
        _ => {
            return match c.set {
                SetQualifier::ForAllValues => true,
                SetQualifier::ForAnyValue => c.if_exists,
                SetQualifier::None => c.if_exists || c.operator.negated(),
            }
        }
    };
    let one = |v: &str| value_holds(p, c, v, ctx);
    match c.set {
        SetQualifier::ForAllValues => present.iter().all(|v| one(v)),
        // A single-valued key has one value; several (no qualifier) behave like ForAnyValue.
        SetQualifier::ForAnyValue | SetQualifier::None => present.iter().any(|v| one(v)),
    }
}

/// Whether one request value satisfies the operator against the policy's values: any of them
/// for a positive operator, none of them for a negated one.
fn value_holds(p: &Policy, c: &Condition, v: &str, ctx: &BTreeMap<String, Vec<String>>) -> bool {
    use Operator::*;
    let any = |f: &dyn Fn(&str) -> bool| c.values.iter().any(|pv| f(pv));
    let hit = match c.operator {
        StringEquals | StringNotEquals | ArnEquals | ArnNotEquals => any(&|pv| {
            expand(p, pv, ctx).is_some_and(|t| t.iter().map(tok_char).collect::<String>() == v)
        }),
        StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => any(&|pv| {
            expand(p, pv, ctx).is_some_and(|t| {
                t.iter()
                    .map(tok_char)
                    .collect::<String>()
                    .eq_ignore_ascii_case(v)
            })
        }),
        StringLike | StringNotLike | ArnLike | ArnNotLike => {
            any(&|pv| expand(p, pv, ctx).is_some_and(|t| glob(&t, v)))
        }
        NumericEquals | NumericNotEquals => {
            any(&|pv| num_cmp(v, pv) == Some(std::cmp::Ordering::Equal))
        }
        NumericLessThan => any(&|pv| num_cmp(v, pv) == Some(std::cmp::Ordering::Less)),
        NumericLessThanEquals => {
            any(&|pv| matches!(num_cmp(v, pv), Some(o) if o != std::cmp::Ordering::Greater))
        }
        NumericGreaterThan => any(&|pv| num_cmp(v, pv) == Some(std::cmp::Ordering::Greater)),
        NumericGreaterThanEquals => {
            any(&|pv| matches!(num_cmp(v, pv), Some(o) if o != std::cmp::Ordering::Less))
        }
        DateEquals | DateNotEquals => any(&|pv| date_cmp(v, pv) == Some(std::cmp::Ordering::Equal)),
        DateLessThan => any(&|pv| date_cmp(v, pv) == Some(std::cmp::Ordering::Less)),
        DateLessThanEquals => {
            any(&|pv| matches!(date_cmp(v, pv), Some(o) if o != std::cmp::Ordering::Greater))
        }
        DateGreaterThan => any(&|pv| date_cmp(v, pv) == Some(std::cmp::Ordering::Greater)),
        DateGreaterThanEquals => {
            any(&|pv| matches!(date_cmp(v, pv), Some(o) if o != std::cmp::Ordering::Less))
        }
        Bool => any(&|pv| pv.eq_ignore_ascii_case(v)),
        IpAddress | NotIpAddress => match v.parse::<IpAddr>() {
            Ok(ip) => any(&|pv| parse_cidr(pv).is_some_and(|net| in_cidr(ip, net))),
            Err(_) => false,
        },
        Null => false,
    };
    hit != c.operator.negated()
}

fn tok_char(t: &Tok) -> char {
    match t {
        Tok::Lit(c) => *c,
        Tok::Star => '*',
        Tok::Question => '?',
    }
}

fn num_cmp(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let (a, b) = (a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?);
    a.partial_cmp(&b)
}

fn date_cmp(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    Some(parse_date(a)?.cmp(&parse_date(b)?))
}

/// Seconds since the epoch of an ISO 8601 date or date-time (UTC `Z` or `±hh:mm`), or of an
/// epoch number.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if b.len() == 10 {
        return Some(secs);
    }
    if b[10] != b'T' || b.len() < 16 {
        return None;
    }
    let (hh, mm) = (num(11..13)?, num(14..16)?);
    let mut rest = &s[16..];
    let mut ss = 0;
    if let Some(r) = rest.strip_prefix(':') {
        ss = r.get(0..2)?.parse().ok()?;
        rest = &r[2..];
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.chars().take_while(char::is_ascii_digit).count();
            rest = &r[n..];
        }
    }
    secs += hh * 3600 + mm * 60 + ss;
    match rest {
        "Z" | "" => Some(secs),
        tz if tz.len() == 6 && tz.is_ascii() && (tz.starts_with('+') || tz.starts_with('-')) => {
            let off = tz[1..3].parse::<i64>().ok()? * 3600 + tz[4..6].parse::<i64>().ok()? * 60;
            Some(if tz.starts_with('+') {
                secs - off
            } else {
                secs + off
            })
        }
        _ => None,
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match s.trim().split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, b.parse::<u8>().ok()?),
        None => {
            let ip = s.trim().parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn in_cidr(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    let to_u128 = |a: IpAddr| match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32u32),
        IpAddr::V6(v) => (u128::from(v), 128u32),
    };
    // IPv4-mapped IPv6 requests compare as IPv4.
    let ip = match ip {
        IpAddr::V6(v) => v.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let ((a, wa), (b, wb)) = (to_u128(ip), to_u128(net));
    if wa != wb {
        return false;
    }
    let bits = u32::from(bits);
    if bits == 0 {
        return true;
    }
    let shift = wa - bits;
    (a >> shift) == (b >> shift)
}
