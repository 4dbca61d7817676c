//! Authentication: JWT issue/verify (HS256 pinned, `exp`/`iat`/`iss`/`aud`
//! required, key rotation by `kid`), Argon2id password hashing, and
//! username/password rules. Every token carries a random `jti` (so one
//! token can be revoked: logout) and its issue time in milliseconds
//! (`iat_ms`, so a password change revokes exactly the tokens issued
//! before it); tokens from before those claims verify without them. The
//! revocation state itself lives in the store (`web/tokens.rs` checks it).
//!
//! Owns: [`Keys`], [`Claims`], [`AuthError`]. The clock is an argument, so
//! verification is deterministic in tests. Password hashing is CPU-heavy:
//! callers run it off the async runtime (`spawn_blocking`).
//! Must not import: tokio, axum, redis, sqlx.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm as Variant, Argon2, Block, Params, Version};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    pub name: String,
    pub username: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    /// Token id (32 hex characters): what a logout revokes. Absent in
    /// tokens issued before revocation existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Issue time in milliseconds (`iat` is whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<i64>,
}

impl Claims {
    /// When the token was issued, in milliseconds: `iat_ms` when it agrees
    /// with `iat`, else the start of `iat`'s second.
    pub fn issued_ms(&self) -> i64 {
        self.iat_ms
            .filter(|ms| ms.div_euclid(1000) == self.iat)
            .unwrap_or(self.iat.saturating_mul(1000))
    }
}

/// Token ids: 1-64 of `[A-Za-z0-9_-]` (ours are 32 hex characters).
pub fn valid_jti(j: &str) -> bool {
    (1..=64).contains(&j.len())
        && j.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("JWT_SECRET must be at least 32 bytes")]
    WeakSecret,
}

/// One signing secret with its key id.
#[derive(Clone)]
struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &[u8]) -> Self {
        // The kid names the secret without revealing it.
        let kid = hex::encode(&Sha256::digest(secret)[..6]);
        Self {
            kid,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

/// Signing keys: tokens are issued with `current`; tokens signed with
/// `previous` (a rotated-out secret) are still accepted.
#[derive(Clone)]
pub struct Keys {
    current: Key,
    previous: Option<Key>,
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("kid", &self.current.kid)
            .finish_non_exhaustive()
    }
}

pub const MIN_SECRET_BYTES: usize = 32;
/// Appended to the audience of device credentials ([`Keys::issue_device`]).
const DEVICE_AUDIENCE: &str = ":device";
/// How long a device credential lasts (a year).
pub const DEVICE_TTL_SECS: i64 = 365 * 24 * 3600;
/// Clock skew tolerated on `iat` and `exp` (seconds).
pub const LEEWAY: i64 = 30;

impl Keys {
    pub fn new(
        secret: &[u8],
        previous: Option<&[u8]>,
        issuer: &str,
        audience: &str,
        ttl_secs: i64,
    ) -> Result<Self, AuthError> {
        if secret.len() < MIN_SECRET_BYTES || previous.is_some_and(|p| p.len() < MIN_SECRET_BYTES) {
            return Err(AuthError::WeakSecret);
        }
        Ok(Self {
            current: Key::new(secret),
            previous: previous.map(Key::new),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
        })
    }

    /// A token for this user, valid from `now` (seconds since the epoch).
    pub fn issue(&self, user_id: &str, username: &str, name: &str, now: i64) -> String {
        self.issue_at_ms(user_id, username, name, now.saturating_mul(1000))
    }

    /// A token for this user issued at `now_ms` (milliseconds since the
    /// epoch), with a fresh random `jti`.
    pub fn issue_at_ms(&self, user_id: &str, username: &str, name: &str, now_ms: i64) -> String {
        self.sign(
            user_id,
            username,
            name,
            now_ms,
            &self.audience,
            self.ttl_secs,
        )
    }

    /// The device credential a login answers with (a cookie): it says this
    /// client signed in as the user before, which exempts it from the
    /// per-account login limit. It is no session: its audience is the
    /// tokens' with `:device` appended, so [`Self::verify`] refuses it.
    pub fn issue_device(&self, user_id: &str, username: &str, now_ms: i64) -> String {
        let audience = format!("{}{DEVICE_AUDIENCE}", self.audience);
        self.sign(user_id, username, "", now_ms, &audience, DEVICE_TTL_SECS)
    }

    /// A device credential's claims (`sub`: the user; issued when), if it
    /// is one of ours and current.
    pub fn verify_device(&self, token: &str, now: i64) -> Option<Claims> {
        let audience = format!("{}{DEVICE_AUDIENCE}", self.audience);
        self.verify_for(token, now, &audience).ok()
    }

    fn sign(
        &self,
        user_id: &str,
        username: &str,
        name: &str,
        now_ms: i64,
        audience: &str,
        ttl_secs: i64,
    ) -> String {
        let now = now_ms.div_euclid(1000);
        let claims = Claims {
            sub: user_id.to_owned(),
            name: name.to_owned(),
            username: username.to_owned(),
            iat: now,
            exp: now + ttl_secs,
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            iat_ms: Some(now_ms),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.kid.clone());
        // HMAC signing of a serialisable struct cannot fail.
        jsonwebtoken::encode(&header, &claims, &self.current.encoding).unwrap_or_default()
    }

    /// Verify signature (HS256 only, by `kid`), issuer, audience, and the
    /// time claims against `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        self.verify_for(token, now, &self.audience)
    }

    fn verify_for(&self, token: &str, now: i64, audience: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::Invalid);
        }
        let key = match header.kid.as_deref() {
            Some(k) if k == self.current.kid => &self.current,
            Some(k) => self
                .previous
                .as_ref()
                .filter(|p| p.kid == k)
                .ok_or(AuthError::Invalid)?,
            None => &self.current,
        };
        let mut v = Validation::new(Algorithm::HS256);
        v.algorithms = vec![Algorithm::HS256];
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[audience]);
        // Time is checked below against the caller's clock.
        v.validate_exp = false;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &v)
            .map_err(|_| AuthError::Invalid)?;
        let c = data.claims;
        if c.jti.as_deref().is_some_and(|j| !valid_jti(j)) {
            return Err(AuthError::Invalid);
        }
        if c.iat > now + LEEWAY {
            return Err(AuthError::Invalid);
        }
        if c.exp + LEEWAY < now {
            return Err(AuthError::Expired);
        }
        Ok(c)
    }
}

thread_local! {
    /// Argon2's working memory (~19 MiB at the default cost), kept by each
    /// thread that hashes and reused: allocating it per hash leaves the
    /// allocator holding several copies per thread (96 concurrent
    /// registrations held 300 MiB that way).
    static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Argon2 of `password` and `salt` into `out`, in this thread's memory.
fn argon2_into(argon: &Argon2, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        let n = argon.params().block_count();
        if blocks.len() != n {
            *blocks = vec![Block::default(); n];
        }
        argon
            .hash_password_into_with_memory(password, salt, out, &mut blocks[..])
            .is_ok()
    })
}

/// The hash of `password` under `argon` and `salt` (PHC salt), `out_len`
/// bytes long.
fn argon2_output(argon: &Argon2, password: &str, salt: Salt, out_len: usize) -> Option<Output> {
    let mut raw = [0u8; 64];
    let salt = salt.decode_b64(&mut raw).ok()?;
    Output::init_with(out_len, |out| {
        argon2_into(argon, password.as_bytes(), salt, out)
            .then_some(())
            .ok_or(argon2::password_hash::Error::Crypto)
    })
    .ok()
}

/// Argon2id hash (default cost) in PHC string form.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::default();
    let (Some(hash), Ok(params)) = (
        argon2_output(&argon, password, salt.as_salt(), Params::DEFAULT_OUTPUT_LEN),
        ParamsString::try_from(argon.params()),
    ) else {
        return String::new();
    };
    PasswordHash {
        algorithm: Variant::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params,
        salt: Some(salt.as_salt()),
        hash: Some(hash),
    }
    .to_string()
}

/// Whether `password` matches `hash` (a PHC string), compared in
/// constant time.
pub fn verify_password(password: &str, hash: &str) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let argon = (|| {
        let algorithm = Variant::try_from(h.algorithm).ok()?;
        let version = h
            .version
            .map(Version::try_from)
            .transpose()
            .ok()?
            .unwrap_or_default();
        let params = Params::try_from(&h).ok()?;
        Some(Argon2::new(algorithm, version, params))
    })();
    match (argon, h.salt, h.hash) {
        (Some(argon), Some(salt), Some(expected)) => {
            argon2_output(&argon, password, salt, expected.len()) == Some(expected)
        }
        _ => false,
    }
}

/// A hash to verify against when the user does not exist, so an unknown
/// user costs the same time as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real password"))
}

/// Usernames: 3–32 of `[a-z0-9_.-]`, starting with a letter or digit.
pub fn valid_username(u: &str) -> bool {
    (3..=32).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        && u.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Passwords: 8–256 bytes.
pub fn valid_password(p: &str) -> bool {
    (8..=256).contains(&p.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";
    const NOW: i64 = 1_800_000_000;

    fn keys(secret: &[u8], previous: Option<&[u8]>) -> Keys {
        Keys::new(secret, previous, "tandem", "tandem", 3600).unwrap()
    }

    fn b64(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn round_trip_and_expiry() {
        let k = keys(SECRET, None);
        let t = k.issue("u1", "alice", "Alice", NOW);
        let c = k.verify(&t, NOW + 10).unwrap();
        assert_eq!((c.sub.as_str(), c.username.as_str()), ("u1", "alice"));
        assert_eq!(k.verify(&t, NOW + 3600 + 31), Err(AuthError::Expired));
        // issued in the future
        assert_eq!(k.verify(&t, NOW - 100), Err(AuthError::Invalid));
    }

    #[test]
    fn device_credentials_are_no_sessions_and_sessions_no_device_credentials() {
        let k = keys(SECRET, None);
        let d = k.issue_device("u1", "alice", NOW * 1000);
        assert_eq!(k.verify_device(&d, NOW + 10).unwrap().sub, "u1");
        assert_eq!(k.verify(&d, NOW + 10), Err(AuthError::Invalid));
        let t = k.issue("u1", "alice", "Alice", NOW);
        assert_eq!(k.verify_device(&t, NOW + 10), None);
        assert_eq!(keys(OTHER, None).verify_device(&d, NOW + 10), None);
        assert_eq!(k.verify_device(&d, NOW + DEVICE_TTL_SECS + 31), None);
    }

    #[test]
    fn refuses_weak_secrets() {
        assert!(matches!(
            Keys::new(b"short", None, "i", "a", 1),
            Err(AuthError::WeakSecret)
        ));
        assert!(matches!(
            Keys::new(SECRET, Some(b"short"), "i", "a", 1),
            Err(AuthError::WeakSecret)
        ));
    }

    #[test]
    fn tampered_wrong_audience_wrong_issuer_and_alg_none_are_refused() {
        let k = keys(SECRET, None);
        let t = k.issue("u1", "alice", "Alice", NOW);
        // tampered payload, original signature
        let parts: Vec<&str> = t.split('.').collect();
        let evil = serde_json::json!({"sub":"admin","name":"x","username":"x","iat":NOW,"exp":NOW+100,"iss":"tandem","aud":"tandem"});
        let tampered = format!("{}.{}.{}", parts[0], b64(&evil), parts[2]);
        assert_eq!(k.verify(&tampered, NOW), Err(AuthError::Invalid));
        // alg: none
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg":"none","typ":"JWT"})),
            b64(&evil)
        );
        assert_eq!(k.verify(&none, NOW), Err(AuthError::Invalid));
        // another secret, wrong audience, wrong issuer
        let other = keys(OTHER, None).issue("u1", "a", "A", NOW);
        assert_eq!(k.verify(&other, NOW), Err(AuthError::Invalid));
        let aud = Keys::new(SECRET, None, "tandem", "elsewhere", 60)
            .unwrap()
            .issue("u1", "a", "A", NOW);
        assert_eq!(k.verify(&aud, NOW), Err(AuthError::Invalid));
        let iss = Keys::new(SECRET, None, "mallory", "tandem", 60)
            .unwrap()
            .issue("u1", "a", "A", NOW);
        assert_eq!(k.verify(&iss, NOW), Err(AuthError::Invalid));
        assert_eq!(k.verify("garbage", NOW), Err(AuthError::Invalid));
        // missing exp
        let header = b64(&serde_json::json!({"alg":"HS256","typ":"JWT"}));
        let no_exp = b64(
            &serde_json::json!({"sub":"u","name":"n","username":"u","iat":NOW,"iss":"tandem","aud":"tandem"}),
        );
        let unsigned = format!("{header}.{no_exp}");
        let sig = {
            use hmac::{Hmac, Mac};
            let mut m = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
            m.update(unsigned.as_bytes());
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        };
        assert_eq!(
            k.verify(&format!("{unsigned}.{sig}"), NOW),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn rotation_accepts_the_previous_key() {
        let old = keys(OTHER, None).issue("u1", "alice", "Alice", NOW);
        let rotated = keys(SECRET, Some(OTHER));
        assert!(rotated.verify(&old, NOW).is_ok());
        assert!(rotated
            .verify(&rotated.issue("u1", "a", "A", NOW), NOW)
            .is_ok());
        // once the previous key is dropped, old tokens stop working
        assert_eq!(
            keys(SECRET, None).verify(&old, NOW),
            Err(AuthError::Invalid)
        );
    }

    /// A token signed with `SECRET` whose payload is `claims` as given.
    fn signed(claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(Key::new(SECRET).kid);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn tokens_carry_a_fresh_jti_and_their_issue_time_in_ms() {
        let k = keys(SECRET, None);
        let now_ms = NOW * 1000 + 123;
        let a = k
            .verify(&k.issue_at_ms("u1", "a", "A", now_ms), NOW)
            .unwrap();
        let b = k
            .verify(&k.issue_at_ms("u1", "a", "A", now_ms), NOW)
            .unwrap();
        let (ja, jb) = (a.jti.clone().unwrap(), b.jti.unwrap());
        assert!(ja != jb && ja.len() == 32 && valid_jti(&ja));
        assert_eq!((a.iat, a.issued_ms()), (NOW, now_ms));
        // Tokens from before jti/iat_ms still verify; issued at their second.
        let legacy = serde_json::json!({"sub":"u1","name":"A","username":"a","iat":NOW,
            "exp":NOW+100,"iss":"tandem","aud":"tandem"});
        let c = k.verify(&signed(&legacy), NOW).unwrap();
        assert_eq!((c.jti.as_deref(), c.issued_ms()), (None, NOW * 1000));
        // An iat_ms that disagrees with iat is not believed.
        let mut odd = legacy.clone();
        odd["iat_ms"] = serde_json::json!(NOW * 1000 + 5000);
        assert_eq!(
            k.verify(&signed(&odd), NOW).unwrap().issued_ms(),
            NOW * 1000
        );
        // A jti that could not be ours is refused.
        let mut bad = legacy;
        bad["jti"] = serde_json::json!("x y");
        assert_eq!(k.verify(&signed(&bad), NOW), Err(AuthError::Invalid));
        bad["jti"] = serde_json::json!("j".repeat(65));
        assert_eq!(k.verify(&signed(&bad), NOW), Err(AuthError::Invalid));
    }

    #[test]
    fn passwords_and_usernames() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        // The reused working memory gives the library's own answers, both
        // ways (hashes made before this change still verify).
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse", &theirs));
        assert!(!verify_password("correct horsf", &theirs));
        // Other costs and variants are read from the string.
        let cheap = Argon2::new(
            Variant::Argon2i,
            Version::V0x10,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string();
        assert!(verify_password("pw", &cheap) && !verify_password("pq", &cheap));
        assert!(!verify_password("x", "not a hash"));
        assert!(
            valid_username("alice_01")
                && !valid_username("Al")
                && !valid_username("_x1")
                && !valid_username("a b c")
        );
        assert!(valid_password("12345678") && !valid_password("short"));
    }
}
