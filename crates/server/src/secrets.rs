//! Fresh secrets: 32 bytes from the operating system's CSPRNG (through `rand`'s thread
//! generator, which is seeded from it and reseeds itself), wrapped as a domain [`Secret`].

use rand::RngCore;
use switchboard_domain::{Secret, SecretKind};

pub fn generate(kind: SecretKind) -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::from_random(kind, bytes)
}
