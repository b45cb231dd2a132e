//! The patched candle-core (`vendor/candle-core/RLVR_PATCH.md`) stores a node's first gradient
//! instead of adding it to zeros. These check what that must keep: sums over several uses,
//! gradients that arrive as views (transposed, broadcast, narrowed), and independent results.
use candle_core::{DType, Device, Tensor, Var};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn gradients_of_several_uses_are_summed() {
    let w = Var::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &Device::Cpu).unwrap();
    // d/dw of sum(w + 2 w + w^T w-ish terms): w used three times.
    let x = w.as_tensor();
    let y = ((x + (x * 2.0).unwrap()).unwrap().sum_all().unwrap()
        + x.t().unwrap().sqr().unwrap().sum_all().unwrap())
    .unwrap();
    let g = y.backward().unwrap();
    let got = values(g.get(x).unwrap());
    let want: Vec<f32> = values(x).iter().map(|v| 3.0 + 2.0 * v).collect();
    assert_eq!(got, want);
}

#[test]
fn view_gradients_are_stored_contiguous_with_the_right_values() {
    let w = Var::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &Device::Cpu).unwrap();
    let m = Tensor::new(
        &[[1f32, 10.0, 100.0], [1000.0, 10000.0, 100000.0]],
        &Device::Cpu,
    )
    .unwrap();
    // w^T is used once: its gradient arrives transposed.
    let y = (w.as_tensor().t().unwrap() * &m)
        .unwrap()
        .sum_all()
        .unwrap();
    let g = y.backward().unwrap();
    let gw = g.get(w.as_tensor()).unwrap();
    assert!(gw.is_contiguous());
    assert_eq!(values(gw), values(&m.t().unwrap()));

    // A broadcast and a narrow: gradients summed over the broadcast, zero outside the narrow.
    let b = Var::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap();
    let y = (b
        .as_tensor()
        .broadcast_as((4, 3))
        .unwrap()
        .sum_all()
        .unwrap()
        + b.as_tensor().narrow(0, 1, 2).unwrap().sum_all().unwrap())
    .unwrap();
    let g = y.backward().unwrap();
    assert_eq!(values(g.get(b.as_tensor()).unwrap()), vec![4.0, 5.0, 5.0]);
}

#[test]
fn two_variables_fed_the_same_gradient_both_receive_it() {
    let a = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let b = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let y = (a.as_tensor() + b.as_tensor()).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    let (ga, gb) = (g.get(a.as_tensor()).unwrap(), g.get(b.as_tensor()).unwrap());
    assert_eq!(values(ga), vec![1.0; 3]);
    assert_eq!(values(gb), vec![1.0; 3]);
    // Gradients carry no graph: a step computed from them is not differentiated further.
    assert!(ga.is_contiguous() && !ga.is_variable());
}
