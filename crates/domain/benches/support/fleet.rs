//! The F5 fleet: a registry shaped like a shared manager's (10 accounts, each with 4 orgs
//! of 3 projects; groups of 10 instances at every level; 16 tags), and tasks drawn from the
//! scopes in use. Shared by the `engine` bench and the `engine_profile` example, so a
//! profile looks at exactly what the bench times.

use chrono::{TimeZone, Utc};
use switchboard_domain::engine::{Context, Registry};
use switchboard_domain::{
    Capacity, DelegateGroup, DelegateInstance, GroupId, Ident, ImageFlavour, InstanceId, Scope, Selector, Selectors,
    TaskType, TokenId,
};

pub const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const TAGS: usize = 16;
const PER_GROUP: usize = 10;

/// A small deterministic generator (xorshift), so every run builds the same registry.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn tag(i: usize) -> Selector {
    Selector::parse(&format!("tag-{i}")).expect("valid selector")
}

fn scope_of(rng: &mut Rng) -> String {
    let (a, o, p) = (rng.below(10), rng.below(4), rng.below(3));
    match rng.below(5) {
        0 => format!("acct{a}"),
        1 => format!("acct{a}/org{o}"),
        _ => format!("acct{a}/org{o}/proj{p}"),
    }
}

pub struct Fleet {
    pub registry: Registry,
    pub scopes: Vec<Scope>,
}

pub fn fleet(instances: usize, rng: &mut Rng) -> Fleet {
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid instant");
    let echo = TaskType(Ident::parse("echo").expect("valid"));
    let mut groups = Vec::new();
    let mut members = Vec::new();
    let mut scopes = Vec::new();
    for g in 0..instances.div_ceil(PER_GROUP) {
        let scope = Scope::parse_path(&scope_of(rng)).expect("valid scope");
        let group = DelegateGroup {
            id: GroupId::new(),
            scope: scope.clone(),
            name: Ident::parse(&format!("group-{g}")).expect("valid"),
            tags: [tag(rng.below(TAGS)), tag(rng.below(TAGS))].into_iter().collect(),
            disabled: false,
            created_at: now,
            declared: None,
            paused: None,
        };
        scopes.push(scope);
        for n in 0..PER_GROUP {
            let fresh = rng.below(100) < 95;
            members.push(DelegateInstance {
                id: InstanceId::new(),
                group_id: group.id,
                token_id: TokenId::new(),
                hostname: format!("host-{g}-{n}"),
                version: "1.0.0".to_owned(),
                flavour: ImageFlavour::Minimal,
                tags: [tag(rng.below(TAGS))].into_iter().collect(),
                task_types: vec![echo.clone()],
                capacity: Capacity::new(10).expect("valid"),
                active_tasks: rng.below(10) as u32,
                registered_at: now,
                last_heartbeat_at: if fresh { now } else { now - chrono::Duration::hours(1) },
                connected: fresh,
                paused: None,
                draining: false,
                max_tasks: None,
                tasks_taken: 0,
            });
        }
        groups.push(group);
    }
    Fleet {
        registry: Registry::new(groups, members, [], []),
        scopes,
    }
}

/// A task's scope and selectors.
pub fn tasks(fleet: &Fleet, rng: &mut Rng, n: usize) -> Vec<(Scope, Selectors)> {
    (0..n)
        .map(|_| {
            let scope = fleet.scopes[rng.below(fleet.scopes.len())].clone();
            let selectors: Selectors = (0..rng.below(3)).map(|_| tag(rng.below(TAGS))).collect();
            (scope, selectors)
        })
        .collect()
}

pub fn context() -> Context {
    Context::new(Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 30).single().expect("valid"), 7)
}

pub fn echo() -> TaskType {
    TaskType(Ident::parse("echo").expect("valid"))
}
