//! Parameters: what a model needs ([`ParamSpec`]) and the values it gets ([`ParamSet`]).
//!
//! Guarantees:
//! - [`ParamSet::init`] is a pure function of the specs and the seed: bit-identical values on every
//!   machine (see `crate::rng`). Each tensor draws from its own stream keyed by its name, so adding
//!   or removing a layer does not change the initial values of the others.
//! - A `ParamSet` keeps the order it was built in (the model's order, which the ONNX initializers
//!   and later the train-step graph's parameter inputs follow), has unique names, and every
//!   tensor's data length matches its shape.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::ModelError;
use crate::rng::Rng;

/// How a parameter starts out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// N(0, 2 / fan_out): He et al. for ReLU networks, the torchvision ResNet choice for convs.
    KaimingNormalFanOut {
        fan_out: usize,
    },
    /// U(-bound, bound); Linear layers use bound = 1/sqrt(fan_in), as PyTorch does.
    Uniform {
        bound: f32,
    },
    Zeros,
    Ones,
}

/// A parameter a layer needs: its name, shape and initialisation.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// `false` for state that is updated but not learnt by gradient (BatchNorm running
    /// statistics): a train step gives these no gradient and no optimizer state.
    pub trainable: bool,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, init: Init) -> Self {
        ParamSpec {
            name: name.into(),
            shape,
            init,
            trainable: true,
        }
    }

    /// A non-trainable buffer (see [`ParamSpec::trainable`]).
    pub fn buffer(name: impl Into<String>, shape: Vec<usize>, init: Init) -> Self {
        ParamSpec {
            name: name.into(),
            shape,
            init,
            trainable: false,
        }
    }

    /// The same spec under `prefix.` (how a model places a layer's parameters).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.name = format!("{prefix}.{}", self.name);
        }
        self
    }

    /// Element count; saturates instead of overflowing (such a shape is refused later anyway).
    pub fn numel(&self) -> usize {
        self.shape
            .iter()
            .fold(1usize, |acc, &d| acc.saturating_mul(d))
    }
}

/// One named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Ordered, named f32 tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamSet {
    params: Vec<Param>,
    index: HashMap<String, usize>,
}

impl ParamSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fresh values for `specs`, drawn from `seed`.
    pub fn init(specs: &[ParamSpec], seed: u64) -> Result<Self, ModelError> {
        let mut set = ParamSet::new();
        for spec in specs {
            checked_numel(&spec.name, &spec.shape)?;
            set.push(
                spec.name.clone(),
                spec.shape.clone(),
                initial_values(spec, seed),
            )?;
        }
        Ok(set)
    }

    /// [`ParamSet::init`] for specs a validated model produced (unique names, shapes far from
    /// overflow): infallible, so callers holding a validated model need no error path. A spec
    /// that breaks those promises anyway is skipped rather than corrupting the set, and the
    /// model's own `check_against` reports it when the set is used.
    pub(crate) fn init_validated(specs: &[ParamSpec], seed: u64) -> Self {
        let mut set = ParamSet::new();
        for spec in specs {
            if checked_numel(&spec.name, &spec.shape).is_ok() {
                let _ = set.push(
                    spec.name.clone(),
                    spec.shape.clone(),
                    initial_values(spec, seed),
                );
            }
        }
        set
    }

    /// Appends a tensor; the name must be new and the data must fill the shape.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<(), ModelError> {
        let name = name.into();
        let numel = checked_numel(&name, &shape)?;
        if data.len() != numel {
            return Err(ModelError::DataLength {
                name,
                shape,
                expected: numel,
                found: data.len(),
            });
        }
        if self.index.contains_key(&name) {
            return Err(ModelError::DuplicateParam { name });
        }
        self.index.insert(name.clone(), self.params.len());
        self.params.push(Param { name, shape, data });
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.index.get(name).map(|&i| &self.params[i])
    }

    /// Mutable access to a tensor's values (its name and shape stay fixed).
    pub fn data_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let i = *self.index.get(name)?;
        Some(self.params[i].data.as_mut_slice())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Total number of scalars.
    pub fn num_elements(&self) -> usize {
        self.params.iter().map(|p| p.data.len()).sum()
    }

    /// Checks that this set holds exactly the tensors `specs` describe, with their shapes.
    pub fn check_against(&self, specs: &[ParamSpec]) -> Result<(), ModelError> {
        for spec in specs {
            let param = self
                .get(&spec.name)
                .ok_or_else(|| ModelError::MissingParam {
                    name: spec.name.clone(),
                    shape: spec.shape.clone(),
                })?;
            if param.shape != spec.shape {
                return Err(ModelError::ParamShape {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: param.shape.clone(),
                });
            }
        }
        if self.len() != specs.len() {
            // Same count would mean every name matched; otherwise name the first stranger.
            if let Some(extra) = self
                .params
                .iter()
                .find(|p| !specs.iter().any(|s| s.name == p.name))
            {
                return Err(ModelError::UnexpectedParam {
                    name: extra.name.clone(),
                    expected: specs.len(),
                });
            }
        }
        Ok(())
    }

    /// SHA-256 over names, shapes and little-endian values, in order (hex). Identifies a set of
    /// weights independently of the graph around them; golden tests pin it.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.params {
            h.update((p.name.len() as u64).to_le_bytes());
            h.update(p.name.as_bytes());
            h.update((p.shape.len() as u64).to_le_bytes());
            for &d in &p.shape {
                h.update((d as u64).to_le_bytes());
            }
            for v in &p.data {
                h.update(v.to_le_bytes());
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn initial_values(spec: &ParamSpec, seed: u64) -> Vec<f32> {
    let numel = spec.numel();
    let mut rng = Rng::for_key(seed, &spec.name);
    match spec.init {
        Init::Zeros => vec![0.0; numel],
        Init::Ones => vec![1.0; numel],
        Init::KaimingNormalFanOut { fan_out } => {
            let std = (2.0 / fan_out.max(1) as f64).sqrt();
            (0..numel)
                .map(|_| (std * rng.normal_f64()) as f32)
                .collect()
        }
        Init::Uniform { bound } => (0..numel)
            .map(|_| bound * (2.0 * rng.uniform_f32() - 1.0))
            .collect(),
    }
}

fn checked_numel(name: &str, shape: &[usize]) -> Result<usize, ModelError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| ModelError::Graph(format!("parameter `{name}` shape {shape:?} overflows")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                "conv.weight",
                vec![64, 3, 3, 3],
                Init::KaimingNormalFanOut { fan_out: 64 * 9 },
            ),
            ParamSpec::new("bn.weight", vec![64], Init::Ones),
            ParamSpec::buffer("bn.running_mean", vec![64], Init::Zeros),
            ParamSpec::new("fc.weight", vec![10, 64], Init::Uniform { bound: 0.125 }),
        ]
    }

    #[test]
    fn init_is_deterministic_and_statistically_right() -> Result<(), ModelError> {
        let a = ParamSet::init(&specs(), 1)?;
        assert_eq!(a, ParamSet::init(&specs(), 1)?);
        assert_ne!(a.digest(), ParamSet::init(&specs(), 2)?.digest());
        let w = &a
            .get("conv.weight")
            .ok_or(ModelError::Graph("missing".into()))?
            .data;
        let var = w.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / w.len() as f64;
        let expected = 2.0 / 576.0;
        assert!(
            (var / expected - 1.0).abs() < 0.15,
            "variance {var}, expected {expected}"
        );
        let fc = &a
            .get("fc.weight")
            .ok_or(ModelError::Graph("missing".into()))?
            .data;
        assert!(fc.iter().all(|x| x.abs() <= 0.125));
        assert!(
            a.get("bn.weight")
                .is_some_and(|p| p.data.iter().all(|&x| x == 1.0))
        );
        assert!(
            a.get("bn.running_mean")
                .is_some_and(|p| p.data.iter().all(|&x| x == 0.0))
        );
        Ok(())
    }

    #[test]
    fn a_tensor_does_not_depend_on_its_neighbours() -> Result<(), ModelError> {
        let all = ParamSet::init(&specs(), 9)?;
        let alone = ParamSet::init(&specs()[3..], 9)?;
        assert_eq!(all.get("fc.weight"), alone.get("fc.weight"));
        Ok(())
    }

    #[test]
    fn check_against_names_the_problem() -> Result<(), ModelError> {
        let mut set = ParamSet::init(&specs(), 1)?;
        assert!(set.check_against(&specs()).is_ok());
        assert!(matches!(
            set.check_against(&specs()[..3]),
            Err(ModelError::UnexpectedParam { ref name, .. }) if name == "fc.weight"
        ));
        let mut wrong = specs();
        wrong[1].shape = vec![32];
        assert!(matches!(
            set.check_against(&wrong),
            Err(ModelError::ParamShape { .. })
        ));
        assert!(matches!(
            set.push("bn.weight", vec![1], vec![0.0]),
            Err(ModelError::DuplicateParam { .. })
        ));
        assert!(matches!(
            set.push("x", vec![2], vec![0.0]),
            Err(ModelError::DataLength { .. })
        ));
        Ok(())
    }
}
