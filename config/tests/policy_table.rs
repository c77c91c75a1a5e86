//! The policy decision as a table: each row is a policy, a request and the expected outcome
//! (Allow, explicit Deny, or implicit deny), including IAM's classic traps.

use std::collections::BTreeMap;

use chmura_config::policy::{decide, Decision, Policy, Request};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Allow,
    Deny,
    Implicit,
}
use Want::*;

fn doc(statements: &[String]) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        statements.join(",")
    )
}

fn st(effect: &str, action: &str, resource: &str, cond: &str) -> String {
    let c = if cond.is_empty() {
        String::new()
    } else {
        format!(r#","Condition":{cond}"#)
    };
    format!(r#"{{"Effect":"{effect}",{action},{resource}{c}}}"#)
}

fn allow(action: &str, resource: &str) -> String {
    st(
        "Allow",
        &format!(r#""Action":{action}"#),
        &format!(r#""Resource":{resource}"#),
        "",
    )
}

fn allow_if(action: &str, resource: &str, cond: &str) -> String {
    st(
        "Allow",
        &format!(r#""Action":{action}"#),
        &format!(r#""Resource":{resource}"#),
        cond,
    )
}

fn deny(action: &str, resource: &str) -> String {
    st(
        "Deny",
        &format!(r#""Action":{action}"#),
        &format!(r#""Resource":{resource}"#),
        "",
    )
}

fn deny_if(action: &str, resource: &str, cond: &str) -> String {
    st(
        "Deny",
        &format!(r#""Action":{action}"#),
        &format!(r#""Resource":{resource}"#),
        cond,
    )
}

struct Case {
    name: &'static str,
    policy: String,
    action: &'static str,
    resource: &'static str,
    ctx: Vec<(&'static str, Vec<&'static str>)>,
    want: Want,
}

fn c(
    name: &'static str,
    policy: String,
    action: &'static str,
    resource: &'static str,
    ctx: &[(&'static str, &'static str)],
    want: Want,
) -> Case {
    Case {
        name,
        policy,
        action,
        resource,
        ctx: ctx.iter().map(|(k, v)| (*k, vec![*v])).collect(),
        want,
    }
}

fn base_ctx() -> Vec<(&'static str, &'static str)> {
    vec![
        ("aws:username", "alice"),
        ("aws:SourceIp", "203.0.113.7"),
        ("aws:SecureTransport", "true"),
        ("aws:CurrentTime", "2026-11-27T12:00:00Z"),
    ]
}

fn cases() -> Vec<Case> {
    let any = r#""*""#;
    let obj = r#""arn:aws:s3:::data/*""#;
    let bucket = r#""arn:aws:s3:::data""#;
    let get = r#""s3:GetObject""#;
    let put = r#""s3:PutObject""#;
    let list = r#""s3:ListBucket""#;
    let del = r#""s3:DeleteObject""#;
    let b = base_ctx();
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = base_ctx();
        v.extend_from_slice(extra);
        v
    };
    let mfa = r#"{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}"#;
    let mut v = vec![
        // Basics: default deny, allow, explicit deny wins, order irrelevant.
        c("empty grant is implicit deny", doc(&[allow(get, r#""arn:aws:s3:::other/*""#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("allow exact", doc(&[allow(get, obj)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("allow other action", doc(&[allow(get, obj)]), "s3:PutObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("deny beats allow", doc(&[allow(r#""s3:*""#, any), deny(get, obj)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Deny),
        c("deny beats allow, order reversed", doc(&[deny(get, obj), allow(r#""s3:*""#, any)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Deny),
        c("deny elsewhere does not block", doc(&[allow(r#""s3:*""#, any), deny(get, r#""arn:aws:s3:::secret/*""#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("s3:* allows everything s3", doc(&[allow(r#""s3:*""#, any)]), "s3:DeleteBucket", "arn:aws:s3:::data", &b, Allow),
        c("* action", doc(&[allow(any, any)]), "s3:PutObject", "arn:aws:s3:::x/y", &b, Allow),
        c("action wildcard prefix", doc(&[allow(r#""s3:Get*""#, obj)]), "s3:GetObjectTagging", "arn:aws:s3:::data/k", &b, Allow),
        c("action wildcard prefix no match", doc(&[allow(r#""s3:Get*""#, obj)]), "s3:PutObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("action case-insensitive", doc(&[allow(r#""S3:getobject""#, obj)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("action ? wildcard", doc(&[allow(r#""s3:?etObject""#, obj)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("action middle wildcard", doc(&[allow(r#""s3:*Object""#, obj)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &b, Allow),
        c("action middle wildcard miss", doc(&[allow(r#""s3:*Object""#, obj)]), "s3:DeleteObjectTagging", "arn:aws:s3:::data/k", &b, Implicit),
        c("action list", doc(&[allow(r#"["s3:GetObject","s3:PutObject"]"#, obj)]), "s3:PutObject", "arn:aws:s3:::data/k", &b, Allow),
        // Resources.
        c("bucket ARN does not cover objects", doc(&[allow(get, bucket)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("object ARN does not cover the bucket", doc(&[allow(list, obj)]), "s3:ListBucket", "arn:aws:s3:::data", &b, Implicit),
        c("bucket ARN for ListBucket", doc(&[allow(list, bucket)]), "s3:ListBucket", "arn:aws:s3:::data", &b, Allow),
        c("resource prefix folder", doc(&[allow(get, r#""arn:aws:s3:::data/reports/*""#)]), "s3:GetObject", "arn:aws:s3:::data/reports/2026/q1.csv", &b, Allow),
        c("resource prefix folder miss", doc(&[allow(get, r#""arn:aws:s3:::data/reports/*""#)]), "s3:GetObject", "arn:aws:s3:::data/other/q1.csv", &b, Implicit),
        c("resource middle wildcard", doc(&[allow(get, r#""arn:aws:s3:::data/*/public/*""#)]), "s3:GetObject", "arn:aws:s3:::data/team1/public/a.txt", &b, Allow),
        c("resource middle wildcard crosses slashes", doc(&[allow(get, r#""arn:aws:s3:::data/*/public/*""#)]), "s3:GetObject", "arn:aws:s3:::data/a/b/public/c", &b, Allow),
        c("resource middle wildcard miss", doc(&[allow(get, r#""arn:aws:s3:::data/*/public/*""#)]), "s3:GetObject", "arn:aws:s3:::data/team1/private/a.txt", &b, Implicit),
        c("resource wildcard in bucket name", doc(&[allow(get, r#""arn:aws:s3:::logs-*/*""#)]), "s3:GetObject", "arn:aws:s3:::logs-2026/x", &b, Allow),
        c("resource wildcard bucket does not match prefix bucket", doc(&[allow(get, r#""arn:aws:s3:::logs-*/*""#)]), "s3:GetObject", "arn:aws:s3:::logs/x", &b, Implicit),
        c("resource ? wildcard", doc(&[allow(get, r#""arn:aws:s3:::data/file?.txt""#)]), "s3:GetObject", "arn:aws:s3:::data/file1.txt", &b, Allow),
        c("resource ? is one char", doc(&[allow(get, r#""arn:aws:s3:::data/file?.txt""#)]), "s3:GetObject", "arn:aws:s3:::data/file12.txt", &b, Implicit),
        c("resource case-sensitive", doc(&[allow(get, r#""arn:aws:s3:::data/Reports/*""#)]), "s3:GetObject", "arn:aws:s3:::data/reports/x", &b, Implicit),
        c("resource list", doc(&[allow(get, r#"["arn:aws:s3:::a/*","arn:aws:s3:::data/*"]"#)]), "s3:GetObject", "arn:aws:s3:::data/x", &b, Allow),
        c("ListAllMyBuckets on *", doc(&[allow(r#""s3:ListAllMyBuckets""#, any)]), "s3:ListAllMyBuckets", "*", &b, Allow),
        c("ListAllMyBuckets needs *", doc(&[allow(r#""s3:ListAllMyBuckets""#, bucket)]), "s3:ListAllMyBuckets", "*", &b, Implicit),
        // NotAction / NotResource traps.
        c("NotAction Allow grants everything else", doc(&[st("Allow", r#""NotAction":"s3:DeleteObject""#, r#""Resource":"*""#, "")]), "s3:PutObject", "arn:aws:s3:::data/k", &b, Allow),
        c("NotAction Allow does not grant the named action", doc(&[st("Allow", r#""NotAction":"s3:DeleteObject""#, r#""Resource":"*""#, "")]), "s3:DeleteObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("NotAction Allow with wildcard", doc(&[st("Allow", r#""NotAction":"s3:Delete*""#, r#""Resource":"*""#, "")]), "s3:DeleteBucket", "arn:aws:s3:::data", &b, Implicit),
        c("NotAction Deny denies everything else", doc(&[allow(r#""s3:*""#, any), st("Deny", r#""NotAction":"s3:GetObject""#, r#""Resource":"*""#, "")]), "s3:PutObject", "arn:aws:s3:::data/k", &b, Deny),
        c("NotAction Deny lets the named action through", doc(&[allow(r#""s3:*""#, any), st("Deny", r#""NotAction":"s3:GetObject""#, r#""Resource":"*""#, "")]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("NotResource Allow", doc(&[st("Allow", r#""Action":"s3:*""#, r#""NotResource":"arn:aws:s3:::secret/*""#, "")]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("NotResource Allow excludes", doc(&[st("Allow", r#""Action":"s3:*""#, r#""NotResource":"arn:aws:s3:::secret/*""#, "")]), "s3:GetObject", "arn:aws:s3:::secret/k", &b, Implicit),
        c("NotResource Deny", doc(&[allow(r#""s3:*""#, any), st("Deny", r#""Action":"s3:*""#, r#""NotResource":["arn:aws:s3:::data","arn:aws:s3:::data/*"]"#, "")]), "s3:GetObject", "arn:aws:s3:::other/k", &b, Deny),
        c("NotResource Deny inside", doc(&[allow(r#""s3:*""#, any), st("Deny", r#""Action":"s3:*""#, r#""NotResource":["arn:aws:s3:::data","arn:aws:s3:::data/*"]"#, "")]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        // ${aws:username} home folders.
        c("home folder own", doc(&[allow(r#""s3:*""#, r#""arn:aws:s3:::home/${aws:username}/*""#)]), "s3:GetObject", "arn:aws:s3:::home/alice/notes.txt", &b, Allow),
        c("home folder other user", doc(&[allow(r#""s3:*""#, r#""arn:aws:s3:::home/${aws:username}/*""#)]), "s3:GetObject", "arn:aws:s3:::home/bob/notes.txt", &b, Implicit),
        c("home folder prefix trick", doc(&[allow(r#""s3:*""#, r#""arn:aws:s3:::home/${aws:username}/*""#)]), "s3:GetObject", "arn:aws:s3:::home/alice2/x", &b, Implicit),
        c("variable value is literal, not a wildcard", doc(&[allow(r#""s3:*""#, r#""arn:aws:s3:::home/${aws:username}/*""#)]), "s3:GetObject", "arn:aws:s3:::home/a/x", &with(&[]).into_iter().map(|(k, v)| if k == "aws:username" { (k, "*") } else { (k, v) }).collect::<Vec<_>>(), Implicit),
        c("variables need Version 2012-10-17", r#"{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::home/${aws:username}/*"}]}"#.to_string(), "s3:GetObject", "arn:aws:s3:::home/alice/x", &b, Implicit),
        c("unresolved variable matches nothing", doc(&[allow(r#""s3:*""#, r#""arn:aws:s3:::home/${aws:PrincipalTag/team}/*""#)]), "s3:GetObject", "arn:aws:s3:::home//x", &b, Implicit),
        c("variable default", doc(&[allow(r#""s3:*""#, r#""arn:aws:s3:::home/${aws:PrincipalTag/team, 'shared'}/*""#)]), "s3:GetObject", "arn:aws:s3:::home/shared/x", &b, Allow),
        c("escaped ${*} is a literal star", doc(&[allow(get, r#""arn:aws:s3:::data/${*}""#)]), "s3:GetObject", "arn:aws:s3:::data/*", &b, Allow),
        c("escaped ${*} is not a wildcard", doc(&[allow(get, r#""arn:aws:s3:::data/${*}""#)]), "s3:GetObject", "arn:aws:s3:::data/x", &b, Implicit),
        c("username in condition", doc(&[allow_if(list, bucket, r#"{"StringLike":{"s3:prefix":["home/${aws:username}/*","home/${aws:username}"]}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:prefix", "home/alice/docs")]), Allow),
        c("username in condition other", doc(&[allow_if(list, bucket, r#"{"StringLike":{"s3:prefix":["home/${aws:username}/*"]}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:prefix", "home/bob/")]), Implicit),
        // s3:prefix on ListBucket.
        c("prefix equals", doc(&[allow_if(list, bucket, r#"{"StringEquals":{"s3:prefix":"reports/"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:prefix", "reports/")]), Allow),
        c("prefix absent fails StringEquals", doc(&[allow_if(list, bucket, r#"{"StringEquals":{"s3:prefix":"reports/"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &b, Implicit),
        c("prefix like", doc(&[allow_if(list, bucket, r#"{"StringLike":{"s3:prefix":"reports/*"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:prefix", "reports/2026/")]), Allow),
        c("prefix like miss", doc(&[allow_if(list, bucket, r#"{"StringLike":{"s3:prefix":"reports/*"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:prefix", "secret/")]), Implicit),
        c("prefix empty string allowed explicitly", doc(&[allow_if(list, bucket, r#"{"StringEquals":{"s3:prefix":["","reports/"]}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:prefix", "")]), Allow),
        c("deny listing outside prefix", doc(&[allow(list, bucket), deny_if(list, bucket, r#"{"StringNotLike":{"s3:prefix":"public/*"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:prefix", "private/")]), Deny),
        c("deny listing with absent prefix (negated op, key absent = true)", doc(&[allow(list, bucket), deny_if(list, bucket, r#"{"StringNotLike":{"s3:prefix":"public/*"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &b, Deny),
        c("IfExists on an absent key is true: the Deny applies", doc(&[allow(list, bucket), deny_if(list, bucket, r#"{"StringNotLikeIfExists":{"s3:prefix":"public/*"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &b, Deny),
        c("IfExists on a present key is checked", doc(&[allow(list, bucket), deny_if(list, bucket, r#"{"StringNotLikeIfExists":{"s3:prefix":"public/*"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:prefix", "public/a")]), Allow),
        c("delimiter condition", doc(&[allow_if(list, bucket, r#"{"StringEquals":{"s3:delimiter":"/"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:delimiter", "/")]), Allow),
        c("max-keys limit ok", doc(&[allow_if(list, bucket, r#"{"NumericLessThanEquals":{"s3:max-keys":"100"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:max-keys", "50")]), Allow),
        c("max-keys limit exceeded", doc(&[allow_if(list, bucket, r#"{"NumericLessThanEquals":{"s3:max-keys":"100"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:max-keys", "1000")]), Implicit),
        c("max-keys absent", doc(&[allow_if(list, bucket, r#"{"NumericLessThanEquals":{"s3:max-keys":"100"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &b, Implicit),
        c("max-keys not a number", doc(&[allow_if(list, bucket, r#"{"NumericLessThan":{"s3:max-keys":"100"}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:max-keys", "many")]), Implicit),
        c("NumericGreaterThan", doc(&[allow_if(list, bucket, r#"{"NumericGreaterThan":{"s3:max-keys":10}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:max-keys", "11")]), Allow),
        c("NumericEquals", doc(&[allow_if(list, bucket, r#"{"NumericEquals":{"s3:max-keys":10}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:max-keys", "10")]), Allow),
        c("NumericNotEquals absent key is true", doc(&[allow_if(list, bucket, r#"{"NumericNotEquals":{"s3:max-keys":10}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &b, Allow),
        c("NumericGreaterThanEquals", doc(&[allow_if(list, bucket, r#"{"NumericGreaterThanEquals":{"s3:max-keys":10}}"#)]), "s3:ListBucket", "arn:aws:s3:::data", &with(&[("s3:max-keys", "9")]), Implicit),
        // IP conditions.
        c("IpAddress in range", doc(&[allow_if(get, obj, r#"{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("IpAddress out of range", doc(&[allow_if(get, obj, r#"{"IpAddress":{"aws:SourceIp":"198.51.100.0/24"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("IpAddress list", doc(&[allow_if(get, obj, r#"{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","203.0.113.7/32"]}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("IpAddress bare address", doc(&[allow_if(get, obj, r#"{"IpAddress":{"aws:SourceIp":"203.0.113.7"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("IpAddress IPv6", doc(&[allow_if(get, obj, r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &with(&[]).into_iter().map(|(k, v)| if k == "aws:SourceIp" { (k, "2001:db8::5") } else { (k, v) }).collect::<Vec<_>>(), Allow),
        c("IpAddress IPv4 policy, IPv6 request", doc(&[allow_if(get, obj, r#"{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &with(&[]).into_iter().map(|(k, v)| if k == "aws:SourceIp" { (k, "2001:db8::5") } else { (k, v) }).collect::<Vec<_>>(), Implicit),
        c("IpAddress IPv4-mapped IPv6 request", doc(&[allow_if(get, obj, r#"{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &with(&[]).into_iter().map(|(k, v)| if k == "aws:SourceIp" { (k, "::ffff:203.0.113.9") } else { (k, v) }).collect::<Vec<_>>(), Allow),
        c("IpAddress /0", doc(&[allow_if(get, obj, r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("Deny with NotIpAddress outside", doc(&[allow(r#""s3:*""#, any), deny_if(r#""s3:*""#, any, r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Deny),
        c("Deny with NotIpAddress inside", doc(&[allow(r#""s3:*""#, any), deny_if(r#""s3:*""#, any, r#"{"NotIpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("Deny with NotIpAddress, key absent, denies", doc(&[allow(r#""s3:*""#, any), deny_if(r#""s3:*""#, any, r#"{"NotIpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &[("aws:username", "alice")], Deny),
        c("Allow with IpAddress, key absent, no grant", doc(&[allow_if(get, obj, r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &[("aws:username", "alice")], Implicit),
        // Bool / SecureTransport / MFA.
        c("SecureTransport true", doc(&[allow_if(get, obj, r#"{"Bool":{"aws:SecureTransport":"true"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("SecureTransport false request", doc(&[allow_if(get, obj, r#"{"Bool":{"aws:SecureTransport":"true"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &[("aws:SecureTransport", "false")], Implicit),
        c("Deny insecure transport", doc(&[allow(r#""s3:*""#, any), deny_if(r#""s3:*""#, any, r#"{"Bool":{"aws:SecureTransport":false}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &[("aws:SecureTransport", "false")], Deny),
        c("Bool case-insensitive", doc(&[allow_if(get, obj, r#"{"Bool":{"aws:SecureTransport":"TRUE"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("MFA Deny with BoolIfExists, no MFA", doc(&[allow(r#""s3:*""#, any), deny_if(del, obj, mfa)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &b, Deny),
        c("MFA Deny with BoolIfExists, MFA present", doc(&[allow(r#""s3:*""#, any), deny_if(del, obj, mfa)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &with(&[("aws:MultiFactorAuthPresent", "true"), ("aws:MultiFactorAuthAge", "10")]), Allow),
        c("MFA trap: Bool false never matches without MFA", doc(&[allow(r#""s3:*""#, any), deny_if(del, obj, r#"{"Bool":{"aws:MultiFactorAuthPresent":"false"}}"#)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &b, Allow),
        c("MFA required by Allow", doc(&[allow_if(del, obj, r#"{"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("MFA required by Allow, present", doc(&[allow_if(del, obj, r#"{"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &with(&[("aws:MultiFactorAuthPresent", "true")]), Allow),
        c("MFA age within limit", doc(&[allow_if(del, obj, r#"{"NumericLessThan":{"aws:MultiFactorAuthAge":"300"}}"#)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &with(&[("aws:MultiFactorAuthAge", "12")]), Allow),
        c("MFA age absent", doc(&[allow_if(del, obj, r#"{"NumericLessThan":{"aws:MultiFactorAuthAge":"300"}}"#)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("Deny MFA age too old (IfExists, absent: applies)", doc(&[allow(r#""s3:*""#, any), deny_if(del, obj, r#"{"NumericGreaterThanIfExists":{"aws:MultiFactorAuthAge":"300"}}"#)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &b, Deny),
        c("Deny MFA age (IfExists, fresh)", doc(&[allow(r#""s3:*""#, any), deny_if(del, obj, r#"{"NumericGreaterThanIfExists":{"aws:MultiFactorAuthAge":"300"}}"#)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &with(&[("aws:MultiFactorAuthAge", "5")]), Allow),
        c("Deny MFA age too old", doc(&[allow(r#""s3:*""#, any), deny_if(del, obj, r#"{"NumericGreaterThanIfExists":{"aws:MultiFactorAuthAge":"300"}}"#)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &with(&[("aws:MultiFactorAuthAge", "3600")]), Deny),
        c("Null true: key absent", doc(&[allow(r#""s3:*""#, any), deny_if(del, obj, r#"{"Null":{"aws:MultiFactorAuthAge":"true"}}"#)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &b, Deny),
        c("Null true: key present", doc(&[allow(r#""s3:*""#, any), deny_if(del, obj, r#"{"Null":{"aws:MultiFactorAuthAge":"true"}}"#)]), "s3:DeleteObject", "arn:aws:s3:::data/k", &with(&[("aws:MultiFactorAuthAge", "1")]), Allow),
        c("Null false: key present", doc(&[allow_if(get, obj, r#"{"Null":{"s3:prefix":"false"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &with(&[("s3:prefix", "x")]), Allow),
        // Dates.
        c("DateLessThan before", doc(&[allow_if(get, obj, r#"{"DateLessThan":{"aws:CurrentTime":"2027-01-01T00:00:00Z"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("DateLessThan after", doc(&[allow_if(get, obj, r#"{"DateLessThan":{"aws:CurrentTime":"2026-01-01T00:00:00Z"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("DateGreaterThan", doc(&[allow_if(get, obj, r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-11-27"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("Date window", doc(&[allow_if(get, obj, r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-11-01T00:00:00Z"},"DateLessThan":{"aws:CurrentTime":"2026-12-01T00:00:00Z"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("Date window closed", doc(&[allow_if(get, obj, r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-11-28T00:00:00Z"},"DateLessThan":{"aws:CurrentTime":"2026-12-01T00:00:00Z"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("Date with offset", doc(&[allow_if(get, obj, r#"{"DateLessThan":{"aws:CurrentTime":"2026-11-27T13:30:00+01:00"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("Date epoch seconds", doc(&[allow_if(get, obj, r#"{"DateGreaterThan":{"aws:CurrentTime":"1700000000"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("DateNotEquals absent", doc(&[allow_if(get, obj, r#"{"DateNotEquals":{"aws:TokenIssueTime":"2026-01-01"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        // Strings.
        c("StringEquals case-sensitive", doc(&[allow_if(get, obj, r#"{"StringEquals":{"aws:username":"Alice"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("StringEqualsIgnoreCase", doc(&[allow_if(get, obj, r#"{"StringEqualsIgnoreCase":{"aws:username":"ALICE"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("StringNotEquals", doc(&[allow_if(get, obj, r#"{"StringNotEquals":{"aws:username":"bob"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("StringNotEquals list", doc(&[allow_if(get, obj, r#"{"StringNotEquals":{"aws:username":["bob","alice"]}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("StringNotEqualsIgnoreCase", doc(&[allow_if(get, obj, r#"{"StringNotEqualsIgnoreCase":{"aws:username":"ALICE"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("StringEqualsIfExists absent", doc(&[allow_if(get, obj, r#"{"StringEqualsIfExists":{"s3:RequestObjectTag/team":"red"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("StringEqualsIfExists present wrong", doc(&[allow_if(get, obj, r#"{"StringEqualsIfExists":{"s3:RequestObjectTag/team":"red"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &with(&[("s3:RequestObjectTag/team", "blue")]), Implicit),
        c("condition key names are case-insensitive", doc(&[allow_if(get, obj, r#"{"StringEquals":{"AWS:UserName":"alice"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Allow),
        c("multiple keys in one operator are ANDed", doc(&[allow_if(get, obj, r#"{"StringEquals":{"aws:username":"alice","s3:prefix":"x"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("multiple operators are ANDed", doc(&[allow_if(get, obj, r#"{"StringEquals":{"aws:username":"alice"},"Bool":{"aws:SecureTransport":"false"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        // Object tags.
        c("ExistingObjectTag match", doc(&[allow_if(get, obj, r#"{"StringEquals":{"s3:ExistingObjectTag/class":"public"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &with(&[("s3:ExistingObjectTag/class", "public")]), Allow),
        c("ExistingObjectTag mismatch", doc(&[allow_if(get, obj, r#"{"StringEquals":{"s3:ExistingObjectTag/class":"public"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &with(&[("s3:ExistingObjectTag/class", "secret")]), Implicit),
        c("ExistingObjectTag untagged", doc(&[allow_if(get, obj, r#"{"StringEquals":{"s3:ExistingObjectTag/class":"public"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &b, Implicit),
        c("Deny secret tag", doc(&[allow(get, obj), deny_if(get, obj, r#"{"StringEquals":{"s3:ExistingObjectTag/class":"secret"}}"#)]), "s3:GetObject", "arn:aws:s3:::data/k", &with(&[("s3:ExistingObjectTag/class", "secret")]), Deny),
        c("RequestObjectTag required on put", doc(&[allow_if(put, obj, r#"{"StringEquals":{"s3:RequestObjectTag/project":"x"}}"#)]), "s3:PutObject", "arn:aws:s3:::data/k", &with(&[("s3:RequestObjectTag/project", "x")]), Allow),
        c("RequestObjectTag missing on put", doc(&[allow_if(put, obj, r#"{"StringEquals":{"s3:RequestObjectTag/project":"x"}}"#)]), "s3:PutObject", "arn:aws:s3:::data/k", &b, Implicit),
    ];
    // Set qualifiers over a multi-valued key.
    let tags = |vals: &[&'static str]| {
        let mut ctx: Vec<(&'static str, Vec<&'static str>)> =
            base_ctx().into_iter().map(|(k, v)| (k, vec![v])).collect();
        if !vals.is_empty() {
            ctx.push(("s3:RequestObjectTagKeys", vals.to_vec()));
        }
        ctx
    };
    for (name, op, vals, want) in [
        (
            "ForAllValues subset",
            "ForAllValues:StringEquals",
            vec!["a", "b"],
            Allow,
        ),
        (
            "ForAllValues not subset",
            "ForAllValues:StringEquals",
            vec!["a", "z"],
            Implicit,
        ),
        (
            "ForAllValues absent key is true",
            "ForAllValues:StringEquals",
            vec![],
            Allow,
        ),
        (
            "ForAnyValue overlap",
            "ForAnyValue:StringEquals",
            vec!["z", "b"],
            Allow,
        ),
        (
            "ForAnyValue none",
            "ForAnyValue:StringEquals",
            vec!["y", "z"],
            Implicit,
        ),
        (
            "ForAnyValue absent key is false",
            "ForAnyValue:StringEquals",
            vec![],
            Implicit,
        ),
        (
            "ForAnyValue StringLike",
            "ForAnyValue:StringLike",
            vec!["x", "c9"],
            Allow,
        ),
        (
            "ForAnyValue StringLike: request values are literal",
            "ForAnyValue:StringLike",
            vec!["x", "b*"],
            Implicit,
        ),
        (
            "ForAllValues StringLike",
            "ForAllValues:StringLike",
            vec!["a", "c"],
            Allow,
        ),
    ] {
        v.push(Case {
            name,
            policy: doc(&[allow_if(
                put,
                obj,
                &format!(r#"{{"{op}":{{"s3:RequestObjectTagKeys":["a","b","c*"]}}}}"#),
            )]),
            action: "s3:PutObject",
            resource: "arn:aws:s3:::data/k",
            ctx: tags(&vals),
            want,
        });
    }
    v.push(Case {
        name: "Deny ForAnyValue forbidden tag key",
        policy: doc(&[
            allow(put, obj),
            deny_if(
                put,
                obj,
                r#"{"ForAnyValue:StringEquals":{"s3:RequestObjectTagKeys":["secret"]}}"#,
            ),
        ]),
        action: "s3:PutObject",
        resource: "arn:aws:s3:::data/k",
        ctx: tags(&["ok", "secret"]),
        want: Deny,
    });
    v.push(Case {
        name: "two policies: deny in the second wins",
        policy: String::new(),
        action: "s3:DeleteObject",
        resource: "arn:aws:s3:::data/k",
        ctx: tags(&[]),
        want: Deny,
    });
    v
}

fn run(case: &Case) -> Decision {
    let policies = if case.policy.is_empty() {
        vec![
            Policy::parse("a.json", &doc(&[allow(r#""s3:*""#, r#""*""#)])).expect("a"),
            Policy::parse("b.json", &doc(&[deny(r#""s3:Delete*""#, r#""*""#)])).expect("b"),
        ]
    } else {
        vec![Policy::parse("p.json", &case.policy).unwrap_or_else(|e| panic!("{}: {e}", case.name))]
    };
    let ctx: BTreeMap<String, Vec<String>> = case
        .ctx
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    decide(
        &policies,
        &Request {
            action: case.action,
            resource: case.resource,
            context: &ctx,
        },
    )
}

#[test]
fn decision_table() {
    let cases = cases();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let got = run(case);
        let kind = match got {
            Decision::Allow { .. } => Allow,
            Decision::Deny { .. } => Deny,
            Decision::ImplicitDeny => Implicit,
        };
        if kind != case.want {
            failures.push(format!("{}: want {:?}, got {got:?}", case.name, case.want));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn decisions_name_their_statement() {
    let p = Policy::parse(
        "p.json",
        &doc(&[
            allow(r#""s3:Get*""#, r#""*""#),
            deny(r#""s3:GetObject""#, r#""arn:aws:s3:::x/*""#),
        ]),
    )
    .expect("parse");
    let ctx = BTreeMap::new();
    let req = |action, resource| Request {
        action,
        resource,
        context: &ctx,
    };
    assert_eq!(
        decide(
            std::slice::from_ref(&p),
            &req("s3:GetObject", "arn:aws:s3:::x/k")
        ),
        Decision::Deny {
            source: "p.json".into(),
            statement: 1
        }
    );
    assert_eq!(
        decide(
            std::slice::from_ref(&p),
            &req("s3:GetObject", "arn:aws:s3:::y/k")
        ),
        Decision::Allow {
            source: "p.json".into(),
            statement: 0
        }
    );
    assert_eq!(
        decide(&[], &req("s3:GetObject", "arn:aws:s3:::y/k")),
        Decision::ImplicitDeny
    );
}

#[test]
fn malformed_policies_name_file_statement_and_reason() {
    for (text, statement, reason) in [
        ("{", None, "not valid JSON"),
        ("[]", None, "a policy is a JSON object"),
        (r#"{"Statement":[]}"#, None, "must not be empty"),
        (
            r#"{"Version":"2020-01-01","Statement":[]}"#,
            None,
            "Version must be",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"},{"Effect":"Maybe","Action":"s3:*","Resource":"*"}]}"#,
            Some(1),
            "Effect must be",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
            Some(0),
            "exactly one of Action and NotAction",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","NotAction":"s3:Get*","Resource":"*"}]}"#,
            Some(0),
            "exactly one of Action and NotAction",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*"}]}"#,
            Some(0),
            "exactly one of Resource and NotResource",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"iam:PassRole","Resource":"*"}]}"#,
            Some(0),
            "not an S3 action",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:ec2:::x"}]}"#,
            Some(0),
            "not an S3 ARN",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*","Principal":"*"}]}"#,
            Some(0),
            "does not belong",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringSorta":{"a":"b"}}}]}"#,
            Some(0),
            "unknown condition operator",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"nope"}}}]}"#,
            Some(0),
            "not an IP address",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"Null":{"k":"maybe"}}}]}"#,
            Some(0),
            "\"true\" or \"false\"",
        ),
        (
            r#"{"Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*","Condition":{"NumericGreaterThan":{"s3:max-keys":"ten"}}}]}"#,
            Some(0),
            "NumericGreaterThan/s3:max-keys: \"ten\" is not a number",
        ),
        (
            r#"{"Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*","Condition":{"NumericLessThanEqualsIfExists":{"aws:MultiFactorAuthAge":["3600","1h"]}}}]}"#,
            Some(0),
            "\"1h\" is not a number",
        ),
        (
            r#"{"Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"next tuesday"}}}]}"#,
            Some(0),
            "is not an ISO 8601 date",
        ),
        (
            r#"{"Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"no"}}}]}"#,
            Some(0),
            "Bool/aws:SecureTransport: \"no\" is not \"true\" or \"false\"",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}"#,
            Some(0),
            "must not be empty",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*","Extra":1}]}"#,
            Some(0),
            "unknown element",
        ),
    ] {
        let e = Policy::parse("bad.json", text).expect_err(text);
        assert_eq!(e.file, "bad.json");
        assert_eq!(e.statement, statement, "{text}: {e}");
        assert!(e.reason.contains(reason), "{text}: {e}");
    }
}

#[test]
fn allow_statements_naming_none_of_the_tenants_buckets_are_found() {
    let p = Policy::parse(
        "a.json",
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:*","Resource":["arn:aws:s3:::data","arn:aws:s3:::data/*"]},
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::shared-store/acme/*"},
            {"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::da*"},
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::${aws:username}-logs/*"},
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"*"},
            {"Effect":"Allow","Action":"s3:GetObject","NotResource":"arn:aws:s3:::elsewhere/*"},
            {"Effect":"Deny","Action":"s3:*","Resource":"arn:aws:s3:::elsewhere"},
            {"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::logs-archive/*"}
        ]}"#,
    )
    .expect("parse");
    assert_eq!(p.allows_outside(&["data", "acme-logs"]), [1, 7]);
    assert_eq!(p.allows_outside(&["data", "logs-archive"]), [1, 3]);
}

#[test]
fn warnings_for_policies_that_grant_nothing_and_the_mfa_trap() {
    let p = Policy::parse("d.json", &doc(&[deny(r#""s3:*""#, r#""*""#)])).expect("parse");
    assert!(p.warnings().iter().any(|w| w.contains("grants nothing")));
    let p = Policy::parse(
        "m.json",
        &doc(&[
            allow(r#""s3:*""#, r#""*""#),
            deny_if(
                r#""s3:DeleteObject""#,
                r#""*""#,
                r#"{"Bool":{"aws:MultiFactorAuthPresent":"false"}}"#,
            ),
        ]),
    )
    .expect("parse");
    assert!(p.warnings().iter().any(|w| w.contains("BoolIfExists")));
    let ok = Policy::parse("ok.json", &doc(&[allow(r#""s3:*""#, r#""*""#)])).expect("parse");
    assert!(ok.warnings().is_empty());
    let p = Policy::parse(
        "k.json",
        &doc(&[
            allow(r#""s3:*""#, r#""*""#),
            deny_if(
                r#""s3:PutObject""#,
                r#""*""#,
                r#"{"StringEquals":{"s3:x-amz-acl":"public-read"}}"#,
            ),
        ]),
    )
    .expect("parse");
    assert!(
        p.warnings()
            .iter()
            .any(|w| w.contains("never set by Chmura")),
        "{:?}",
        p.warnings()
    );
}
