//! The Dockerfile's build stage replayed on the host, no Docker engine
//! needed: a scratch directory gets exactly what the stage's `COPY` lines
//! copy from the build context (after `.dockerignore`), with the files'
//! own modification times as Docker keeps them, and the stage's `RUN`
//! commands run there in order. A file the build needs that the Dockerfile
//! does not copy (or `.dockerignore` drops) fails the replay, and so does a
//! dependency-layer stub that leaves the real sources unbuilt.
//!
//! To stay cheap in CI, `cargo build --release` is replayed as `cargo check`
//! in the test's own target directory (dependencies are then mostly checked
//! already by clippy; a check writes no binary, so the `tandem` the other
//! tests run is never touched) and offline (this test's build fetched every
//! crate already).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Dockerfile's instructions, continuation lines joined, comments and
/// parser directives dropped: (INSTRUCTION, arguments).
pub fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if !current.is_empty() && trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (word, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((word.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside a continued line"
    );
    out
}

/// `.dockerignore` rules in order: (excluded, pattern segments). The last
/// rule matching a path (or one of its parent directories) decides.
pub struct DockerIgnore(Vec<(bool, Vec<String>)>);

impl DockerIgnore {
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (keep, pat) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let segs = pat
                    .trim_start_matches("./")
                    .trim_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (!keep, segs)
            })
            .collect();
        DockerIgnore(rules)
    }

    /// Whether `rel` (a path relative to the context, '/'-separated) is
    /// left out of the build context.
    pub fn excluded(&self, rel: &str) -> bool {
        let segs: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (exclude, pat) in &self.0 {
            // A rule matches the path or any directory above it.
            if (1..=segs.len()).any(|n| match_segments(pat, &segs[..n])) {
                excluded = *exclude;
            }
        }
        excluded
    }
}

fn match_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|i| match_segments(rest, &path[i..])),
        Some((p, rest)) => {
            !path.is_empty()
                && glob(p.as_bytes(), path[0].as_bytes())
                && match_segments(rest, &path[1..])
        }
    }
}

/// One path segment against `*` / `?` wildcards.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Copy `src` (file or directory) to `dst` as Docker's COPY does: a
/// directory's contents (not the directory itself), files keeping their
/// modification times, `.dockerignore`d paths skipped. Returns the files
/// copied.
fn copy_in(context: &Path, rel: &str, dst: &Path, ignore: &DockerIgnore) -> usize {
    let src = context.join(rel);
    if ignore.excluded(rel) {
        return 0;
    }
    let meta = std::fs::metadata(&src).unwrap_or_else(|e| panic!("COPY {rel}: {e}"));
    if meta.is_file() {
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&src, dst).unwrap();
        let f = std::fs::File::options().write(true).open(dst).unwrap();
        f.set_modified(meta.modified().unwrap()).unwrap();
        return 1;
    }
    std::fs::create_dir_all(dst).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        n += copy_in(context, &format!("{rel}/{name}"), &dst.join(&name), ignore);
    }
    n
}

/// Replay the build stage (the first FROM up to the next) of `dockerfile`
/// from `context` in `scratch` (emptied first) with `run` executing each
/// RUN command (given the command and its working directory). Returns the
/// output of each RUN.
pub fn replay_build_stage(
    context: &Path,
    dockerfile: &str,
    scratch: &Path,
    run: &mut dyn FnMut(&str, &Path) -> String,
) -> Vec<String> {
    let ignore = DockerIgnore::parse(
        &std::fs::read_to_string(context.join(".dockerignore")).unwrap_or_default(),
    );
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).unwrap();
    let mut workdir = scratch.to_path_buf();
    let mut outputs = Vec::new();
    let mut froms = 0;
    for (word, args) in instructions(dockerfile) {
        match word.as_str() {
            "FROM" => {
                froms += 1;
                if froms > 1 {
                    break;
                }
            }
            "WORKDIR" => {
                workdir = scratch.join(args.trim_start_matches('/'));
                std::fs::create_dir_all(&workdir).unwrap();
            }
            "COPY" | "ADD" => {
                let parts: Vec<&str> = args.split_whitespace().collect();
                assert!(
                    !parts
                        .iter()
                        .any(|p| p.starts_with("--from") || p.starts_with('[')),
                    "the replay does not handle {word} {args}"
                );
                let parts: Vec<&str> = parts.into_iter().filter(|p| !p.starts_with("--")).collect();
                let (dest, sources) = parts.split_last().expect("COPY needs a destination");
                assert!(!sources.is_empty(), "{word} {args}");
                let dest_dir = dest.ends_with('/') || *dest == "." || sources.len() > 1;
                let dest = workdir.join(dest);
                for src in sources {
                    assert!(!src.contains(['*', '?']), "globs are not replayed: {src}");
                    let rel = src.trim_start_matches("./").trim_end_matches('/');
                    let is_file = context.join(rel).is_file();
                    let target = if is_file && dest_dir {
                        dest.join(Path::new(rel).file_name().unwrap())
                    } else {
                        dest.clone()
                    };
                    let copied = copy_in(context, rel, &target, &ignore);
                    assert!(
                        copied > 0,
                        "{word} {src}: nothing copied (missing or .dockerignored)"
                    );
                }
            }
            "RUN" => outputs.push(run(&args, &workdir)),
            "ENV" | "ARG" | "LABEL" | "USER" | "SHELL" | "EXPOSE" => {}
            other => panic!("the replay does not handle {other}"),
        }
    }
    outputs
}

/// The test binary's own target directory (…/target/debug/deps/it-…).
fn own_target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

#[test]
fn dockerignore_rules_match_like_docker() {
    let ig = DockerIgnore::parse(
        "# c\n.git\n**/target\n.env\n.env.*\n!.env.example\n**/node_modules\n*.md\n!README.md\n",
    );
    for (path, out) in [
        (".git/config", true),
        ("target/debug/x", true),
        ("crates/a/target/x", true),
        (".env", true),
        (".env.local", true),
        (".env.example", false),
        ("web/node_modules/a/b.js", true),
        ("web/static/app.js", false),
        ("ARCHITECTURE.md", true),
        ("README.md", false),
        ("docs/protocol.md", false),
        ("src/main.rs", false),
    ] {
        assert_eq!(ig.excluded(path), out, "{path}");
    }
}

#[test]
fn the_context_leaves_out_build_output_secrets_and_local_data() {
    let ig = DockerIgnore::parse(&std::fs::read_to_string(repo().join(".dockerignore")).unwrap());
    for path in [
        "target/release/tandem",
        "crates/tandem-bench/target/x",
        ".env",
        ".git/HEAD",
        "data/tandem.db",
        "web/node_modules/playwright-core/package.json",
        "bench/results/abuse/x.json",
    ] {
        assert!(
            ig.excluded(path),
            "{path} would be sent to the Docker daemon"
        );
    }
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "web/static/index.html",
        "migrations/sqlite/0001_documents.sql",
    ] {
        assert!(!ig.excluded(path), "{path} is needed by the build");
    }
}

/// The build stage, replayed: fails when a file the build needs is not in
/// the image's build directory, or when the real sources are not built
/// after the dependency layer.
#[test]
fn the_image_build_stage_builds_from_what_the_dockerfile_copies() {
    let root = repo();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let target = own_target_dir();
    let scratch = target.join("docker-replay");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut run = |cmd: &str, dir: &Path| {
        assert!(
            cmd.contains("cargo build --release"),
            "unexpected RUN: {cmd}"
        );
        let cmd = cmd
            .replace("cargo build --release", "cargo check")
            .replace("cargo ", &format!("{cargo} "));
        // Niced and on one job: the other tests run meanwhile.
        let out = Command::new("nice")
            .args(["-n", "19", "sh", "-c", &cmd])
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", &target)
            .env("CARGO_NET_OFFLINE", "true")
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_BUILD_JOBS", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "RUN {cmd}\nfailed in the replayed build:\n{stderr}"
        );
        stderr
    };
    let outputs = replay_build_stage(&root, &dockerfile, &scratch, &mut run);
    assert_eq!(outputs.len(), 2, "expected a dependency layer and a build");
    // The second build compiled the real sources, not the stubs' leftovers.
    let last = &outputs[1];
    for krate in ["tandem-core v", "tandem v"] {
        assert!(
            last.contains(&format!("Checking {krate}")),
            "the final RUN did not rebuild {krate}: stubs taken as up to date?\n{last}"
        );
    }
    // What the image gets: the embedded assets and migrations were there.
    let src = scratch.join("src");
    assert!(src.join("web/static/index.html").is_file());
    assert!(src.join("migrations/postgres").is_dir());
    let _ = std::fs::remove_dir_all(&scratch);
}
