//! Embeds `migrations/postgres/` (see `migrations/embed.rs`).

include!("../../migrations/embed.rs");

fn main() {
    embed_migrations("../../migrations/postgres");
}
