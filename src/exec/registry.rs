//! Provider clients, one per profile, built once per engine and shared by every run it
//! starts: so per-profile limits and per-endpoint circuit breakers hold across runs (all the
//! runs of `--each-line`, every run of `orc serve`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{Agent, Ensemble, NodeKind, Profile};
use crate::plan::Plan;
use crate::providers::{self, Provider, ProviderError};

/// Where provider responses come from.
pub enum Mode {
    /// The providers themselves.
    Live,
    /// The providers, with every response appended to a recording.
    Record(Arc<providers::replay::Recorder>),
    /// A recording only.
    Replay(Arc<providers::replay::Recorded>),
}

/// The clients of one run's profiles.
#[derive(Default, Clone)]
pub struct ProviderRegistry {
    providers: HashMap<String, Arc<dyn Provider>>,
}

impl ProviderRegistry {
    /// Adds or replaces the client of a profile (tests use in-memory providers).
    pub fn insert(&mut self, profile: &str, provider: Arc<dyn Provider>) {
        self.providers.insert(profile.to_string(), provider);
    }

    pub(crate) fn get(&self, profile: &Profile) -> Arc<dyn Provider> {
        Arc::clone(
            self.providers
                .get(&profile.name)
                .expect("the registry was built for every profile of the plan"),
        )
    }
}

/// Clients built for profiles of one name: (profile, client).
type SameName = Vec<(Arc<Profile>, Arc<dyn Provider>)>;

/// Builds and keeps clients. Two profiles of the same name can differ (an ensemble file may
/// define its own), so a client is reused only for an identical profile.
pub(crate) struct Clients {
    mode: Mode,
    factory: Mutex<providers::Factory>,
    built: Mutex<HashMap<String, SameName>>,
}

impl Clients {
    pub(crate) fn new(mode: Mode, limits: Option<Arc<dyn providers::LimitBackend>>) -> Clients {
        Clients {
            mode,
            factory: Mutex::new(providers::Factory::with_limits(limits)),
            built: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn mode(&self) -> &Mode {
        &self.mode
    }

    /// A client for every profile the plan can call, nested ensembles included. Fails
    /// before any call when a profile cannot work (e.g. its key is missing).
    pub(crate) fn for_plan(
        &self,
        plan: &Plan,
    ) -> Result<ProviderRegistry, (String, ProviderError)> {
        self.for_profiles(profiles_of(&plan.ensemble))
    }

    /// A client for every profile one agent can call (a job run on a worker).
    pub(crate) fn for_agent(
        &self,
        agent: &Agent,
    ) -> Result<ProviderRegistry, (String, ProviderError)> {
        self.for_profiles(profiles_of_agents(std::iter::once(agent)))
    }

    fn for_profiles(
        &self,
        profiles: Vec<Arc<Profile>>,
    ) -> Result<ProviderRegistry, (String, ProviderError)> {
        let mut registry = ProviderRegistry::default();
        for profile in profiles {
            if registry.providers.contains_key(&profile.name) {
                continue;
            }
            let client = self.client(&profile)?;
            registry.providers.insert(profile.name.clone(), client);
        }
        Ok(registry)
    }

    fn client(&self, profile: &Arc<Profile>) -> Result<Arc<dyn Provider>, (String, ProviderError)> {
        let mut built = self.built.lock().expect("not poisoned");
        let same_name = built.entry(profile.name.clone()).or_default();
        if let Some((_, client)) = same_name.iter().find(|(p, _)| **p == **profile) {
            return Ok(Arc::clone(client));
        }
        let fail = |e| (profile.name.clone(), e);
        let mut factory = self.factory.lock().expect("not poisoned");
        let client: Arc<dyn Provider> = match &self.mode {
            Mode::Replay(recorded) => Arc::new(providers::replay::Replay {
                profile: Arc::clone(profile),
                recorded: Arc::clone(recorded),
            }),
            Mode::Live => factory.build(profile).map_err(fail)?,
            Mode::Record(recorder) => Arc::new(providers::replay::Recording {
                inner: factory.build(profile).map_err(fail)?,
                profile: Arc::clone(profile),
                recorder: Arc::clone(recorder),
            }),
        };
        same_name.push((Arc::clone(profile), Arc::clone(&client)));
        Ok(client)
    }
}

/// Every profile an ensemble can call: primaries, fallbacks, `generate` candidates, in
/// nested ensembles too.
fn profiles_of(ensemble: &Ensemble) -> Vec<Arc<Profile>> {
    profiles_of_agents(ensemble.agents.iter())
}

/// Every profile these agents can call, in the ensembles they nest too.
fn profiles_of_agents<'a>(top: impl Iterator<Item = &'a Agent>) -> Vec<Arc<Profile>> {
    let mut agents: Vec<&Agent> = Vec::new();
    let mut ensembles: Vec<&Ensemble> = Vec::new();
    for agent in top {
        agents.push(agent);
        if let NodeKind::Nested(n) = &agent.node {
            ensembles.extend(n.ensemble.as_deref());
        }
    }
    while let Some(e) = ensembles.pop() {
        for agent in &e.agents {
            agents.push(agent);
            if let NodeKind::Nested(n) = &agent.node {
                ensembles.extend(n.ensemble.as_deref());
            }
        }
    }
    let mut out = Vec::new();
    for agent in agents {
        // Scripts, dedup and nested ensembles carry the default profile only for display.
        if matches!(
            agent.node,
            NodeKind::Script(_) | NodeKind::Nested(_) | NodeKind::Dedup(_)
        ) {
            continue;
        }
        let candidates: &[Arc<Profile>] = match &agent.node {
            NodeKind::Generate(g) => &g.profiles,
            _ => &[],
        };
        out.extend(
            std::iter::once(&agent.profile)
                .chain(&agent.fallbacks)
                .chain(candidates)
                .cloned(),
        );
    }
    out
}
