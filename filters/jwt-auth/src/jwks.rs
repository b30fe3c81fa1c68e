//! JSON Web Key Sets (RFC 7517) and JWS signature verification (RFC 7515/7518/8037).
//!
//! Keys are parsed once per JWKS (at configure for `local_jwks`, once per fetched generation
//! for `remote_jwks`), with every piece of key material a verification needs precomputed then,
//! so the request path only does the signature math.
//!
//! Key selection follows Envoy's jwt_authn (jwt_verify_lib `verifyJwt`): a key is tried when
//! the token has no `kid` or the key has no `kid` or they are equal, and the key's `alg` is
//! absent or equal to the token's. If no key passes that selection the answer is
//! [`VerifyError::NoMatchingKey`] ("Jwks doesn't have key to match kid or alg from Jwt"); if
//! some did but none verified, [`VerifyError::BadSignature`] ("Jwt verification fails"). A key
//! of the wrong type for the alg (an RSA key for an HS256 token) never verifies.

// INTERFACE STUB: replaced by the real implementation (crypto work package).

use std::fmt;

/// A JWS `alg` this filter verifies. `none` is never one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    /// Exact, case-sensitive JWS names (`none`, `None`, `rs256` are not algorithms here).
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }
}

/// Why a JWKS was refused (no usable key at all, or not a JWKS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksError(pub String);

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// No key passed the kid/alg selection (jwt_authn: `JwksKidAlgMismatch`).
    NoMatchingKey,
    /// Keys were tried and none verified the signature (jwt_authn: `JwtVerificationFail`).
    BadSignature,
}

/// A parsed key set. Cheap to share (`Rc`) between the requests of one worker.
#[derive(Debug, Default)]
pub struct Jwks {
    kids: Vec<Option<String>>,
}

impl Jwks {
    /// Parse a JWKS document (`{"keys":[...]}`). Keys that are unusable (unknown `kty`/`crv`,
    /// bad base64url, wrong sizes, RSA modulus below 1024 bits, `use` other than `sig`) are
    /// skipped, as jwt_authn does; the set is refused only when no usable key remains.
    pub fn parse(_json: &[u8]) -> Result<Jwks, JwksError> {
        Err(JwksError("not implemented yet".into()))
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.kids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kids.is_empty()
    }

    /// Whether some key has this `kid` (to decide on a key-rotation refetch).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.kids.iter().any(|k| k.as_deref() == Some(kid))
    }

    /// Verify `signature` (already base64url-decoded) over `signing_input` (the token's
    /// `header.payload` ASCII bytes) with the keys selected by `kid` and `alg`.
    pub fn verify(
        &self,
        _alg: Alg,
        _kid: Option<&str>,
        _signing_input: &[u8],
        _signature: &[u8],
    ) -> Result<(), VerifyError> {
        Err(VerifyError::NoMatchingKey)
    }
}
