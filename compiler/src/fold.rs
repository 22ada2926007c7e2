//! Constant folding: evaluates, on the host at compile time, every node whose inputs
//! are all known — `Constant`, `ConstantOfShape`, shape arithmetic (`Shape`, `Gather`,
//! `Unsqueeze`, `Concat`, `Slice`, ...), casts, and element-wise math on constants.
//! Exported transformer graphs compute their reshape targets and masks this way.

use crate::ir::Const;
use crate::onnx::Node;

/// Why a node with constant inputs cannot be evaluated.
pub type FoldError = String;

/// Most elements a folded constant may have (1 GiB of f32).
pub const MAX_CONST_ELEMENTS: usize = 1 << 28;

/// The element count of `shape`, if it is within [`MAX_CONST_ELEMENTS`].
pub(crate) fn bounded(shape: &[usize]) -> Result<usize, FoldError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_CONST_ELEMENTS)
        .ok_or_else(|| format!("a constant of shape {shape:?} is too large to evaluate at compile time"))
}

/// Numpy broadcasting of two shapes (dimensions as `usize` or `i64`).
pub fn broadcast_shapes<T: Copy + PartialEq + From<u8>>(a: &[T], b: &[T]) -> Option<Vec<T>> {
    let one = T::from(1);
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n { a[i + a.len() - n] } else { one };
            let y = if i + b.len() >= n { b[i + b.len() - n] } else { one };
            if x == y || y == one {
                Some(x)
            } else if x == one {
                Some(y)
            } else {
                None
            }
        })
        .collect()
}

/// For every element of `out` (row-major), the flat index of the element of a tensor of
/// shape `input` that broadcasts to it.
pub fn broadcast_indices(out: &[usize], input: &[usize]) -> Vec<usize> {
    let rank = out.len();
    // Strides of `input` aligned to the right of `out`, 0 where it broadcasts.
    let mut strides = vec![0usize; rank];
    let mut s = 1;
    for d in (0..input.len()).rev() {
        let o = rank - input.len() + d;
        strides[o] = if input[d] == 1 { 0 } else { s };
        s *= input[d];
    }
    let total: usize = out.iter().product();
    let mut idx = vec![0usize; rank];
    let mut result = Vec::with_capacity(total);
    for _ in 0..total {
        result.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    result
}

pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize, FoldError> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

pub(crate) fn binary(op: &str, a: &Const, b: &Const) -> Result<Const, FoldError> {
    let shape = broadcast_shapes(&a.shape, &b.shape)
        .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape))?;
    bounded(&shape)?;
    let (ia, ib) = (broadcast_indices(&shape, &a.shape), broadcast_indices(&shape, &b.shape));
    let compare = matches!(op, "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or");
    if (a.is_int() && b.is_int()) || compare {
        let (x, y) = (a.to_f64(), b.to_f64());
        let (xi, yi) = (a.to_i64(), b.to_i64());
        let v = ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| {
                Ok(match op {
                    "Add" => xi[i].wrapping_add(yi[j]),
                    "Sub" => xi[i].wrapping_sub(yi[j]),
                    "Mul" => xi[i].wrapping_mul(yi[j]),
                    "Div" if yi[j] == 0 => return Err("integer division by zero".to_string()),
                    "Div" => xi[i].wrapping_div(yi[j]),
                    "Max" => xi[i].max(yi[j]),
                    "Min" => xi[i].min(yi[j]),
                    "Pow" => (x[i].powf(y[j])) as i64,
                    "Equal" => i64::from(x[i] == y[j]),
                    "Less" => i64::from(x[i] < y[j]),
                    "Greater" => i64::from(x[i] > y[j]),
                    "LessOrEqual" => i64::from(x[i] <= y[j]),
                    "GreaterOrEqual" => i64::from(x[i] >= y[j]),
                    "And" => i64::from(xi[i] != 0 && yi[j] != 0),
                    "Or" => i64::from(xi[i] != 0 || yi[j] != 0),
                    _ => return Err(format!("{op} is not foldable")),
                })
            })
            .collect::<Result<Vec<i64>, FoldError>>()?;
        return Ok(Const::i64(shape, v));
    }
    let (x, y) = (a.to_f32(), b.to_f32());
    let v = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            Ok(match op {
                "Add" => x[i] + y[j],
                "Sub" => x[i] - y[j],
                "Mul" => x[i] * y[j],
                "Div" => x[i] / y[j],
                "Pow" => x[i].powf(y[j]),
                "Max" => x[i].max(y[j]),
                "Min" => x[i].min(y[j]),
                _ => return Err(format!("{op} is not foldable")),
            })
        })
        .collect::<Result<Vec<f32>, FoldError>>()?;
    Ok(Const::f32(shape, v))
}

pub(crate) fn unary(op: &str, a: &Const) -> Result<Const, FoldError> {
    if a.is_int() {
        let v: Vec<i64> = a
            .to_i64()
            .into_iter()
            .map(|x| match op {
                "Neg" => Ok(-x),
                "Abs" => Ok(x.abs()),
                "Not" => Ok(i64::from(x == 0)),
                "Relu" => Ok(x.max(0)),
                _ => Err(format!("{op} on integers is not foldable")),
            })
            .collect::<Result<_, _>>()?;
        return Ok(Const::i64(a.shape.clone(), v));
    }
    let f: fn(f32) -> f32 = match op {
        "Neg" => |x| -x,
        "Abs" => f32::abs,
        "Sqrt" => f32::sqrt,
        "Exp" => f32::exp,
        "Relu" => |x| x.max(0.0),
        "Reciprocal" => |x| 1.0 / x,
        "Tanh" => f32::tanh,
        "Sigmoid" => |x| 1.0 / (1.0 + (-x).exp()),
        "Erf" => libm_erf,
        "Not" => |x| if x == 0.0 { 1.0 } else { 0.0 },
        _ => return Err(format!("{op} is not foldable")),
    };
    Ok(Const::f32(a.shape.clone(), a.to_f32().into_iter().map(f).collect()))
}

pub(crate) fn libm_erf(x: f32) -> f32 {
    libm::erff(x)
}

pub(crate) fn row_major_index(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Iterates over every multi-index of `shape` in row-major order.
pub(crate) fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let total: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..total {
        f(&idx);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// `Transpose` of a constant.
pub fn transpose(a: &Const, perm: &[usize]) -> Const {
    let shape: Vec<usize> = perm.iter().map(|&p| a.shape[p]).collect();
    let mut src = Vec::with_capacity(a.len());
    let mut at = vec![0usize; perm.len()];
    for_each_index(&shape, |idx| {
        for (d, &p) in perm.iter().enumerate() {
            at[p] = idx[d];
        }
        src.push(row_major_index(&at, &a.shape));
    });
    a.pick(shape, src.into_iter())
}

pub(crate) fn slice(node: &Node, data: &Const, inputs: &[&Const], opset: i64) -> Result<Const, FoldError> {
    let rank = data.shape.len();
    let (starts, ends, axes, steps) = if opset < 10 {
        (
            node.attr_ints("starts").ok_or("no starts")?,
            node.attr_ints("ends").ok_or("no ends")?,
            node.attr_ints("axes"),
            None,
        )
    } else {
        let get = |i: usize| inputs.get(i).map(|c| c.to_i64());
        (get(1).ok_or("no starts")?, get(2).ok_or("no ends")?, get(3), get(4))
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    let mut begin = vec![0i64; rank];
    let mut step = vec![1i64; rank];
    let mut count: Vec<usize> = data.shape.clone();
    for (i, &axis) in axes.iter().enumerate() {
        let a = norm_axis(axis, rank)?;
        let dim = data.shape[a] as i64;
        let s = steps[i];
        if s == 0 {
            return Err("slice step 0".into());
        }
        let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let fix = |v: i64| if v < 0 { v + dim } else { v };
        let (b, e) = if s > 0 {
            (clamp(fix(starts[i]), 0, dim), clamp(fix(ends[i]), 0, dim))
        } else {
            (clamp(fix(starts[i]), -1, dim - 1), clamp(fix(ends[i]), -1, dim - 1))
        };
        let n = if s > 0 { (e - b + s - 1).div_euclid(s) } else { (b - e + (-s) - 1).div_euclid(-s) };
        begin[a] = b;
        step[a] = s;
        count[a] = n.max(0) as usize;
    }
    let mut src = Vec::new();
    let mut at = vec![0usize; rank];
    for_each_index(&count, |idx| {
        for d in 0..rank {
            at[d] = (begin[d] + idx[d] as i64 * step[d]) as usize;
        }
        src.push(row_major_index(&at, &data.shape));
    });
    Ok(data.pick(count, src.into_iter()))
}

pub(crate) fn gather(node: &Node, data: &Const, indices: &Const) -> Result<Const, FoldError> {
    let rank = data.shape.len();
    let axis = norm_axis(node.attr_int("axis", 0), rank)?;
    let dim = data.shape[axis] as i64;
    let idx: Vec<usize> = indices
        .to_i64()
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + dim } else { i };
            if j < 0 || j >= dim {
                Err(format!("gather index {i} is out of range for axis of size {dim}"))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<Result<_, _>>()?;
    let outer: usize = data.shape[..axis].iter().product();
    let inner: usize = data.shape[axis + 1..].iter().product();
    let mut shape = data.shape[..axis].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&data.shape[axis + 1..]);
    let mut src = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in &idx {
            for k in 0..inner {
                src.push((o * data.shape[axis] + i) * inner + k);
            }
        }
    }
    Ok(data.pick(shape, src.into_iter()))
}

/// Evaluates `node` on constant inputs. `shape_of` gives the (known) shape of the first
/// input for `Shape`, whose input need not be constant. Returns one constant per output.
pub fn fold(node: &Node, inputs: &[&Const], opset: i64) -> Result<Vec<Const>, FoldError> {
    let op = node.op_type.as_str();
    let Some(rule) = crate::ops::find(op).and_then(|d| d.fold) else {
        return Err(format!("{op} is not evaluated at compile time"));
    };
    let out = rule(&crate::ops::FoldCx { node, op, inputs, opset })?;
    Ok(vec![out])
}

/// The scalar value of a one-element constant, if it is one.
pub fn scalar(c: &Const) -> Option<f32> {
    (c.len() == 1).then(|| c.to_f32()[0])
}

/// A constant with the same data, another shape.
pub fn reshaped(c: &Const, shape: Vec<usize>) -> Const {
    Const { shape, data: c.data.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::AttributeValue;

    fn node(op: &str) -> Node {
        Node { op_type: op.into(), ..Default::default() }
    }

    #[test]
    fn broadcasting_binary_ops_follow_numpy() {
        let a = Const::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = Const::f32(vec![3], vec![10.0, 20.0, 30.0]);
        let out = fold(&node("Add"), &[&a, &b], 13).unwrap().remove(0);
        assert_eq!(out, Const::f32(vec![2, 3], vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]));
        let c = Const::i64(vec![2, 1], vec![2, 3]);
        let d = Const::i64(vec![1, 2], vec![5, 7]);
        let out = fold(&node("Mul"), &[&c, &d], 13).unwrap().remove(0);
        assert_eq!(out, Const::i64(vec![2, 2], vec![10, 14, 15, 21]));
    }

    #[test]
    fn shape_arithmetic_folds() {
        // Gather(shape, 0) -> Unsqueeze -> Concat with [-1, 64]
        let shape = Const::i64(vec![3], vec![4, 32, 128]);
        let mut g = node("Gather");
        g.attributes.push(crate::onnx::Attribute { name: "axis".into(), value: AttributeValue::Int(0) });
        let b = fold(&g, &[&shape, &Const::i64(vec![], vec![0])], 13).unwrap().remove(0);
        assert_eq!(b, Const::i64(vec![], vec![4]));
        let u = fold(&node("Unsqueeze"), &[&b, &Const::i64(vec![1], vec![0])], 13).unwrap().remove(0);
        assert_eq!(u.shape, vec![1]);
        let cat = fold(&node("Concat"), &[&u, &Const::i64(vec![2], vec![-1, 64])], 13).unwrap().remove(0);
        assert_eq!(cat, Const::i64(vec![3], vec![4, -1, 64]));
        let sl =
            fold(&node("Slice"), &[&shape, &Const::i64(vec![1], vec![1]), &Const::i64(vec![1], vec![i64::MAX])], 13)
                .unwrap()
                .remove(0);
        assert_eq!(sl, Const::i64(vec![2], vec![32, 128]));
    }

    #[test]
    fn transpose_and_where() {
        let a = Const::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(transpose(&a, &[1, 0]), Const::f32(vec![3, 2], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
        let c = Const::i64(vec![3], vec![1, 0, 1]);
        let out = fold(&node("Where"), &[&c, &Const::f32(vec![1], vec![9.0]), &a], 13).unwrap().remove(0);
        assert_eq!(out.to_f32(), vec![9.0, 2.0, 9.0, 9.0, 5.0, 9.0]);
    }
}
