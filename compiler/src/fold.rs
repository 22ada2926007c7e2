//! Constant folding: evaluates, on the host at compile time, every node whose inputs
//! are all known — `Constant`, `ConstantOfShape`, shape arithmetic (`Shape`, `Gather`,
//! `Unsqueeze`, `Concat`, `Slice`, ...), casts, and element-wise math on constants.
//! Exported transformer graphs compute their reshape targets and masks this way.

use crate::ir::Const;
use crate::onnx::{data_type, AttributeValue, Node};

/// Why a node with constant inputs cannot be evaluated.
pub type FoldError = String;

/// Most elements a folded constant may have (1 GiB of f32).
pub const MAX_CONST_ELEMENTS: usize = 1 << 28;

/// The element count of `shape`, if it is within [`MAX_CONST_ELEMENTS`].
fn bounded(shape: &[usize]) -> Result<usize, FoldError> {
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

fn norm_axis(axis: i64, rank: usize) -> Result<usize, FoldError> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

fn binary(op: &str, a: &Const, b: &Const) -> Result<Const, FoldError> {
    let shape = broadcast_shapes(&a.shape, &b.shape)
        .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape))?;
    bounded(&shape)?;
    let (ia, ib) = (broadcast_indices(&shape, &a.shape), broadcast_indices(&shape, &b.shape));
    let compare = matches!(op, "Equal" | "Less" | "Greater" | "And" | "Or");
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

fn unary(op: &str, a: &Const) -> Result<Const, FoldError> {
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

fn libm_erf(x: f32) -> f32 {
    libm::erff(x)
}

fn row_major_index(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Iterates over every multi-index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
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

fn slice(node: &Node, data: &Const, inputs: &[&Const], opset: i64) -> Result<Const, FoldError> {
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

fn gather(node: &Node, data: &Const, indices: &Const) -> Result<Const, FoldError> {
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
    let input = |i: usize| inputs.get(i).copied().ok_or_else(|| format!("input {i} is missing"));
    let op = node.op_type.as_str();
    let out = match op {
        "Identity" | "Dropout" => input(0)?.clone(),
        "Cast" => {
            let to = i32::try_from(node.attr_int("to", i64::from(data_type::FLOAT))).unwrap_or(0);
            let a = input(0)?;
            match to {
                data_type::FLOAT | data_type::FLOAT16 | data_type::DOUBLE => Const::f32(a.shape.clone(), a.to_f32()),
                data_type::BOOL => {
                    Const::i64(a.shape.clone(), a.to_f64().iter().map(|&x| i64::from(x != 0.0)).collect())
                }
                _ => Const::i64(a.shape.clone(), a.to_i64()),
            }
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Equal" | "Less" | "Greater" | "And" | "Or" => {
            let mut acc = input(0)?.clone();
            for b in &inputs[1..] {
                acc = binary(op, &acc, b)?;
            }
            acc
        }
        "Sum" => {
            let mut acc = input(0)?.clone();
            for b in &inputs[1..] {
                acc = binary("Add", &acc, b)?;
            }
            acc
        }
        "Neg" | "Abs" | "Sqrt" | "Exp" | "Relu" | "Reciprocal" | "Tanh" | "Sigmoid" | "Erf" | "Not" => {
            unary(op, input(0)?)?
        }
        "Where" => {
            let (c, x, y) = (input(0)?, input(1)?, input(2)?);
            let shape = broadcast_shapes(&c.shape, &x.shape)
                .and_then(|s| broadcast_shapes(&s, &y.shape))
                .ok_or("Where operands do not broadcast")?;
            let (ic, ix, iy) = (
                broadcast_indices(&shape, &c.shape),
                broadcast_indices(&shape, &x.shape),
                broadcast_indices(&shape, &y.shape),
            );
            let cond = c.to_i64();
            if x.is_int() && y.is_int() {
                let (xv, yv) = (x.to_i64(), y.to_i64());
                Const::i64(shape, (0..ic.len()).map(|k| if cond[ic[k]] != 0 { xv[ix[k]] } else { yv[iy[k]] }).collect())
            } else {
                let (xv, yv) = (x.to_f32(), y.to_f32());
                Const::f32(shape, (0..ic.len()).map(|k| if cond[ic[k]] != 0 { xv[ix[k]] } else { yv[iy[k]] }).collect())
            }
        }
        "Reshape" => {
            let a = input(0)?;
            let target = input(1)?.to_i64();
            let mut shape: Vec<i64> = target.clone();
            for (i, d) in shape.iter_mut().enumerate() {
                if *d == 0 {
                    *d = *a.shape.get(i).ok_or("0 refers past the input's rank")? as i64;
                }
            }
            let known: i64 = shape.iter().filter(|&&d| d != -1).product();
            let total = a.len() as i64;
            for d in shape.iter_mut().filter(|d| **d == -1) {
                *d = if known > 0 { total / known } else { 0 };
            }
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            if shape.iter().product::<usize>() != a.len() {
                return Err(format!("cannot reshape {:?} to {target:?}", a.shape));
            }
            Const { shape, data: a.data.clone() }
        }
        "Flatten" => {
            let a = input(0)?;
            let axis = norm_axis(node.attr_int("axis", 1), a.shape.len() + 1)?;
            let shape = vec![a.shape[..axis].iter().product(), a.shape[axis..].iter().product()];
            Const { shape, data: a.data.clone() }
        }
        "Squeeze" | "Unsqueeze" => {
            let a = input(0)?;
            let axes = if opset < 13 { node.attr_ints("axes") } else { inputs.get(1).map(|c| c.to_i64()) };
            let shape = if op == "Squeeze" {
                match axes {
                    None => a.shape.iter().copied().filter(|&d| d != 1).collect(),
                    Some(axes) => {
                        let axes: Vec<usize> =
                            axes.iter().map(|&x| norm_axis(x, a.shape.len())).collect::<Result<_, _>>()?;
                        a.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
                    }
                }
            } else {
                let axes = axes.ok_or("Unsqueeze needs axes")?;
                let rank = a.shape.len() + axes.len();
                let mut axes: Vec<usize> = axes.iter().map(|&x| norm_axis(x, rank)).collect::<Result<_, _>>()?;
                axes.sort();
                let mut shape = a.shape.clone();
                for x in axes {
                    shape.insert(x.min(shape.len()), 1);
                }
                shape
            };
            Const { shape, data: a.data.clone() }
        }
        "Concat" => {
            let first = input(0)?;
            let rank = first.shape.len();
            let axis = norm_axis(node.attr_int("axis", 0), rank)?;
            let mut shape = first.shape.clone();
            shape[axis] = inputs.iter().map(|c| c.shape.get(axis).copied().unwrap_or(0)).sum();
            let outer: usize = shape[..axis].iter().product();
            let any_float = inputs.iter().any(|c| !c.is_int());
            let mut f = Vec::new();
            let mut i = Vec::new();
            for o in 0..outer {
                for c in inputs {
                    if c.shape.len() != rank {
                        return Err("Concat inputs differ in rank".into());
                    }
                    let block: usize = c.shape[axis..].iter().product();
                    if any_float {
                        f.extend_from_slice(&c.to_f32()[o * block..(o + 1) * block]);
                    } else {
                        i.extend_from_slice(&c.to_i64()[o * block..(o + 1) * block]);
                    }
                }
            }
            if any_float {
                Const::f32(shape, f)
            } else {
                Const::i64(shape, i)
            }
        }
        "Gather" => gather(node, input(0)?, input(1)?)?,
        "Slice" => slice(node, input(0)?, inputs, opset)?,
        "Transpose" => {
            let a = input(0)?;
            let perm: Vec<usize> = node
                .attr_ints("perm")
                .unwrap_or_else(|| (0..a.shape.len() as i64).rev().collect())
                .iter()
                .map(|&p| p as usize)
                .collect();
            if perm.len() != a.shape.len() || perm.iter().any(|&p| p >= a.shape.len()) {
                return Err(format!("perm {perm:?} for rank {}", a.shape.len()));
            }
            transpose(a, &perm)
        }
        "Expand" => {
            let a = input(0)?;
            let target: Vec<usize> = input(1)?.to_i64().iter().map(|&d| d.max(0) as usize).collect();
            let shape = broadcast_shapes(&a.shape, &target).ok_or("Expand shapes do not broadcast")?;
            bounded(&shape)?;
            let idx = broadcast_indices(&shape, &a.shape);
            a.pick(shape, idx.into_iter())
        }
        "Range" => {
            let (s, l, d) = (input(0)?, input(1)?, input(2)?);
            if s.is_int() {
                let (s, l, d) = (s.to_i64()[0], l.to_i64()[0], d.to_i64()[0]);
                if d == 0 {
                    return Err("Range delta 0".into());
                }
                let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
                bounded(&[n])?;
                Const::i64(vec![n], (0..n as i64).map(|k| s + k * d).collect())
            } else {
                let (s, l, d) = (s.to_f32()[0], l.to_f32()[0], d.to_f32()[0]);
                let n = ((l - s) / d).ceil().max(0.0) as usize;
                bounded(&[n])?;
                Const::f32(vec![n], (0..n).map(|k| s + k as f32 * d).collect())
            }
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = input(0)?
                .to_i64()
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
                .collect::<Result<_, _>>()?;
            let n = bounded(&shape)?;
            match node.attribute("value") {
                Some(AttributeValue::Tensor(t)) => {
                    let v = t.to_f32(None).map_err(|e| e.to_string())?;
                    let x = *v.first().ok_or("ConstantOfShape value is empty")?;
                    if data_type::is_integer(t.data_type) {
                        Const::i64(shape, vec![x as i64; n])
                    } else {
                        Const::f32(shape, vec![x; n])
                    }
                }
                _ => Const::f32(shape, vec![0.0; n]),
            }
        }
        _ => return Err(format!("{op} is not evaluated at compile time")),
    };
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
