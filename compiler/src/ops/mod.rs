//! One place per ONNX operator: for each, its output shape ([`ShapeCx`]), its value when
//! every input is known at compile time ([`FoldCx`]), and the IR layers it becomes
//! (`Builder`), side by side in one module per operator family: each family's `OPS`
//! table names its operators and their rules, so adding an operator touches its family's
//! file only (and `FAMILIES` for a new family).

mod cache;
mod constants;
mod conv_pool;
mod elementwise;
mod layout;
mod matmul;
mod normalize;
mod quantize;
mod reduce;

use crate::build::Builder;
use crate::fold::FoldError;
use crate::ir::Const;
use crate::onnx::Node;
use crate::shapes::{ShapeError, Shapes};
use crate::CompileError;
pub(crate) use cache::KV_CACHE_MARK;
pub(crate) use quantize::QuantConst;

/// An operator's output shape.
pub(crate) type ShapeRule = fn(&ShapeCx<'_>) -> Result<Vec<i64>, ShapeError>;
/// An operator's value on constant inputs.
pub(crate) type FoldRule = fn(&FoldCx<'_>) -> Result<Const, FoldError>;
/// The IR an operator becomes.
pub(crate) type BuildRule = fn(&mut Builder<'_>, &Node) -> Result<(), CompileError>;

/// What the compiler knows of one operator. A missing rule means the operator is not
/// supported that way (e.g. `Gather` only on constants).
pub(crate) struct OpDef {
    pub name: &'static str,
    pub shape: Option<ShapeRule>,
    pub fold: Option<FoldRule>,
    pub build: Option<BuildRule>,
}

/// The operator `op_type` of the default domain, if the compiler knows it.
pub(crate) fn find(op_type: &str) -> Option<&'static OpDef> {
    FAMILIES.iter().flat_map(|f| f.iter()).find(|d| d.name == op_type)
}

/// How the compiler takes an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Lowered to device instructions (and folded when its inputs are constants).
    Device,
    /// Evaluated at compile time only: every input must be known then.
    CompileTime,
}

/// Every operator of the default domain the compiler takes, sorted by name (what
/// `aic-exec -dump-supported-ops` prints). `Constant` and `Shape` are handled by the
/// importer itself.
pub fn supported() -> Vec<(&'static str, Support)> {
    let mut all: Vec<(&'static str, Support)> = FAMILIES
        .iter()
        .flat_map(|f| f.iter())
        .map(|d| (d.name, if d.build.is_some() { Support::Device } else { Support::CompileTime }))
        .chain([("Constant", Support::CompileTime), ("Shape", Support::CompileTime)])
        .collect();
    all.sort_by_key(|&(name, _)| name);
    all
}

/// A node's shape inference: its inputs' dimensions and the values known so far.
pub(crate) struct ShapeCx<'a> {
    pub node: &'a Node,
    pub opset: i64,
    pub shapes: &'a Shapes,
}

impl ShapeCx<'_> {
    pub fn fail(&self, reason: String) -> ShapeError {
        ShapeError::Mismatch { node: self.node.name.clone(), op_type: self.node.op_type.clone(), reason }
    }

    /// Dimensions of input `i`.
    pub fn input(&self, i: usize) -> Result<&Vec<i64>, ShapeError> {
        let name = self.node.inputs.get(i).ok_or_else(|| self.fail(format!("has no input {i}")))?;
        self.shapes.dims.get(name).ok_or_else(|| ShapeError::MissingInput {
            node: self.node.name.clone(),
            op_type: self.node.op_type.clone(),
            input: name.clone(),
        })
    }

    /// Values of input `i`, which must be known at compile time.
    pub fn value(&self, i: usize) -> Result<Vec<i64>, ShapeError> {
        let name = self.node.inputs.get(i).ok_or_else(|| self.fail(format!("has no input {i}")))?;
        self.shapes
            .values
            .get(name)
            .cloned()
            .ok_or_else(|| self.fail(format!("input '{name}' must be known at compile time")))
    }
}

/// A node whose inputs are all constants, to evaluate.
pub(crate) struct FoldCx<'a> {
    pub node: &'a Node,
    pub op: &'a str,
    pub inputs: &'a [&'a Const],
    pub opset: i64,
}

impl FoldCx<'_> {
    pub fn input(&self, i: usize) -> Result<&Const, FoldError> {
        self.inputs.get(i).copied().ok_or_else(|| format!("input {i} is missing"))
    }
}

/// Unary maps, activations and normalisations keep their input's shape.
fn shape_same_as_input(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    Ok(cx.input(0)?.clone())
}

/// Every operator the compiler takes, family by family.
static FAMILIES: [&[OpDef]; 9] = [
    elementwise::OPS,
    conv_pool::OPS,
    matmul::OPS,
    normalize::OPS,
    reduce::OPS,
    layout::OPS,
    constants::OPS,
    quantize::OPS,
    cache::OPS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_is_defined_once_and_has_a_rule() {
        let all: Vec<&OpDef> = FAMILIES.iter().flat_map(|f| f.iter()).collect();
        for (i, d) in all.iter().enumerate() {
            assert!(all[..i].iter().all(|o| o.name != d.name), "{} is defined twice", d.name);
            assert!(d.shape.is_some() || d.fold.is_some() || d.build.is_some(), "{} has no rule", d.name);
            assert!(std::ptr::eq(find(d.name).unwrap(), *d));
        }
        assert!(find("NoSuchOp").is_none());
    }
}
