use super::*;

fn layout(text: &str) -> Layout {
    text.parse().unwrap()
}

/// The B offsets of A's positions, read element by element through the strided view.
fn offsets(l: &str, b: &[usize], a: &[usize]) -> Vec<usize> {
    let s = layout(l).resolve(b, a).unwrap();
    (0..s.elements()).map(|i| s.offset(i)).collect()
}

/// numpy's `x.transpose(p)` of a row-major array of shape `shape`, as the source offsets.
fn transpose_offsets(shape: &[usize], p: &[usize]) -> Vec<usize> {
    let strides: Vec<usize> = (0..shape.len())
        .map(|k| shape[k + 1..].iter().product())
        .collect();
    let out: Vec<usize> = p.iter().map(|&k| shape[k]).collect();
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut flat| {
            let mut offset = 0;
            for k in (0..out.len()).rev() {
                offset += (flat % out[k]) * strides[p[k]];
                flat /= out[k];
            }
            offset
        })
        .collect()
}

#[test]
fn text_round_trips_and_is_strict() {
    for text in [
        "permute(0,2,1,3)",
        "reshape(201,6,64)|permute(1,0,2)",
        "permute(1,0)|reshape(1,196,384)",
    ] {
        assert_eq!(layout(text).to_string(), text);
    }
    assert_eq!(
        layout(" reshape( 2, 3 ) | permute(1, 0) ").to_string(),
        "reshape(2,3)|permute(1,0)"
    );
    let err = |t: &str| t.parse::<Layout>().unwrap_err();
    assert!(err("transpose(1,0)").contains("unknown step \"transpose\""));
    assert!(err("permute(0,0)").contains("not a permutation"));
    assert!(err("permute(0,2)").contains("not a permutation"));
    assert!(err("reshape(2,x)").contains("\"x\" in step"));
    assert!(err("reshape(2,3").contains("does not end with `)`"));
    assert!(err("").contains("empty layout"));
    assert!(err("permute(1,0)|").contains("is not `reshape(…)`"));
}

#[test]
fn permutes_read_as_numpy_transposes() {
    // B [1,3,2,4] read as A [1,2,3,4]: A = B.transpose(0,2,1,3).
    assert_eq!(
        offsets("permute(0,2,1,3)", &[1, 3, 2, 4], &[1, 2, 3, 4]),
        transpose_offsets(&[1, 3, 2, 4], &[0, 2, 1, 3])
    );
    // NCHW read as NHWC.
    assert_eq!(
        offsets("permute(0,2,3,1)", &[1, 3, 4, 5], &[1, 4, 5, 3]),
        transpose_offsets(&[1, 3, 4, 5], &[0, 2, 3, 1])
    );
}

#[test]
fn head_merge_then_permute_reads_as_reshape_then_transpose() {
    // B [1,4,6] (tokens, heads·hd) read as A [1,2,4,3] (heads, tokens, hd).
    let got = offsets("reshape(4,2,3)|permute(1,0,2)", &[1, 4, 6], &[1, 2, 4, 3]);
    assert_eq!(got, transpose_offsets(&[4, 2, 3], &[1, 0, 2]));
    // And back: A [1,4,6] from B [1,2,4,3].
    let back = offsets("permute(0,2,1,3)|reshape(1,4,6)", &[1, 2, 4, 3], &[1, 4, 6]);
    assert_eq!(back, transpose_offsets(&[2, 4, 3], &[1, 0, 2]));
}

#[test]
fn a_reshape_after_a_permute_must_split_or_merge() {
    let e = layout("permute(1,0)|reshape(3,2)")
        .resolve(&[2, 3], &[3, 2])
        .unwrap();
    assert_eq!(e.dims, vec![(3, 1), (2, 3)]);
    let e = layout("permute(1,0)|reshape(2,3)")
        .resolve(&[2, 3], &[2, 3])
        .unwrap_err();
    assert!(e.contains("does not split or merge"), "{e}");
    let e = layout("permute(1,0)")
        .resolve(&[2, 3], &[2, 3])
        .unwrap_err();
    assert!(e.contains("not A's shape [2, 3]"), "{e}");
    let e = layout("permute(0,1,2)")
        .resolve(&[2, 3], &[3, 2])
        .unwrap_err();
    assert!(e.contains("has 3 axes"), "{e}");
}

#[test]
fn gather_copies_in_a_order() {
    let b: Vec<u8> = (0u8..24).collect();
    let s = layout("permute(1,0)").resolve(&[4, 6], &[6, 4]).unwrap();
    let mut out = vec![0u8; 10];
    s.gather(&b, 1, 7, 10, &mut out);
    let expected: Vec<u8> = (7..17).map(|i| b[s.offset(i)]).collect();
    assert_eq!(out, expected);
    assert!(
        Layout::default()
            .resolve(&[1, 4, 6], &[4, 6])
            .unwrap()
            .is_contiguous()
    );
}

fn texts(b: &[usize], a: &[usize]) -> Vec<String> {
    hypotheses(b, a).iter().map(ToString::to_string).collect()
}

#[test]
fn hypotheses_cover_the_usual_layouts_simplest_first() {
    assert_eq!(texts(&[1, 201, 384], &[201, 384]), vec![""]);
    // Head split is a reshape; its reading comes first.
    let split = texts(&[1, 201, 384], &[1, 201, 6, 64]);
    assert_eq!(split[0], "reshape(1,201,6,64)");
    // [B,N,H,hd] vs [B,H,N,hd].
    assert!(texts(&[1, 201, 6, 64], &[1, 6, 201, 64]).contains(&"permute(0,2,1,3)".into()));
    // [B,N,D] vs [B,H,N,hd]: reshape + permute, both ways.
    assert!(
        texts(&[1, 201, 384], &[1, 6, 201, 64])
            .contains(&"reshape(201,6,64)|permute(1,0,2)".into())
    );
    assert!(
        texts(&[1, 6, 201, 64], &[1, 201, 384])
            .contains(&"permute(0,2,1,3)|reshape(1,201,384)".into())
    );
    // [B,D,h,w] vs [B,hw,D].
    assert!(
        texts(&[1, 384, 14, 14], &[1, 196, 384])
            .contains(&"permute(0,2,3,1)|reshape(1,196,384)".into())
    );
    // NCHW vs NHWC: both spatial orders are hypotheses, the values tell them apart.
    let nhwc = texts(&[1, 3, 8, 8], &[1, 8, 8, 3]);
    assert!(nhwc.contains(&"permute(0,2,3,1)".into()), "{nhwc:?}");
    assert!(nhwc.contains(&"permute(0,3,2,1)".into()), "{nhwc:?}");
    assert!(texts(&[5, 7], &[6, 6]).is_empty());
    assert!(texts(&[2, 3], &[7]).is_empty());
}

#[test]
fn every_hypothesis_resolves_to_a_distinct_order() {
    for (b, a) in [
        (vec![1, 201, 384], vec![1, 6, 201, 64]),
        (vec![1, 384, 14, 14], vec![1, 196, 384]),
        (vec![1, 3, 8, 8], vec![1, 8, 8, 3]),
        (vec![4, 4], vec![4, 4]),
    ] {
        let hs = hypotheses(&b, &a);
        assert!(!hs.is_empty() && hs.len() <= MAX_HYPOTHESES);
        let orders: BTreeSet<Vec<(usize, usize)>> =
            hs.iter().map(|h| h.resolve(&b, &a).unwrap().dims).collect();
        assert_eq!(orders.len(), hs.len(), "{b:?} -> {a:?}: {hs:?}");
    }
}
