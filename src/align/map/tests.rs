use super::*;

#[test]
fn map_file_rewrites_apply_per_side_in_order() {
    let m = NameMap::parse(
        r#"
        [pairs]
        "x" = "y"
        [[rewrite]]
        side = "b"
        pattern = '^layer(\d+)/ln1$'
        replace = 'blocks.$1.norm1'
        [[rewrite]]
        pattern = '\.norm1$'
        replace = '.n1'
        "#,
    )
    .unwrap();
    assert_eq!(
        m.pairs,
        vec![MapPair {
            a: "x".into(),
            b: "y".into(),
            layout: None,
            line: None
        }]
    );
    assert_eq!(m.key("layer3/ln1", Side::B).unwrap(), "blocks.3.n1");
    assert_eq!(m.key("layer3/ln1", Side::A).unwrap(), "layer3/ln1");
    assert_eq!(m.key("blocks.3.norm1", Side::A).unwrap(), "blocks.3.n1");
}

/// 30 rules that each insert text at every position of a name (an empty pattern) would make a
/// 3^30-byte key from a 900-byte file; the rewrite that passes the bound is named instead.
#[test]
fn rewrites_that_grow_names_without_bound_are_refused() {
    let text = "[[rewrite]]\npattern = ''\nreplace = 'xx'\n".repeat(30);
    let m = NameMap::parse(&text).unwrap();
    let e = m.key("blocks.0.ls1", Side::A).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "map file: rewrite #8 makes the name \"blocks.0.ls1\" longer than {MAX_KEY_BYTES} bytes; \
             does its pattern \"\" match the empty string?"
        )
    );
}

#[test]
fn map_file_errors_name_the_problem() {
    let e = NameMap::parse("[[rewrite]]\npattern = '('\nreplace = ''\n").unwrap_err();
    assert!(
        format!("{e:#}").contains("rewrite #1: invalid regex"),
        "{e:#}"
    );
    let e = NameMap::parse("[pairz]\n").unwrap_err();
    assert!(format!("{e:#}").contains("unknown field `pairz`"), "{e:#}");
}

#[test]
fn pairs_with_layouts_parse_and_errors_name_the_line() {
    let m = NameMap::parse(
        "[[pair]]\na = \"blocks.0.attn.v\"\nb = \"v_t\"\nlayout = \"permute(0,2,1,3)\"\n\n[[pair]]\na = \"x\"\nb = \"y\"\n",
    )
    .unwrap();
    assert_eq!(m.pairs.len(), 2);
    assert_eq!(m.pairs[0].line, Some(1));
    assert_eq!(
        m.pairs[0].layout.as_ref().unwrap().to_string(),
        "permute(0,2,1,3)"
    );
    assert_eq!(m.pairs[1].line, Some(6));
    assert_eq!(m.pairs[1].layout, None);
    let e = NameMap::parse("\n\n[[pair]]\na = \"p\"\nb = \"q\"\nlayout = \"transpose(1,0)\"\n")
        .unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "[[pair]] at line 3 (\"p\" ⇔ \"q\"): layout \"transpose(1,0)\": unknown step \"transpose\" \
         in \"transpose(1,0)\"; a layout has only `reshape(…)` and `permute(…)` steps"
    );
    let e = NameMap::parse("[[pair]]\na = \"p\"\nb = \"q\"\nlayuot = \"x\"\n").unwrap_err();
    assert!(format!("{e:#}").contains("unknown field `layuot`"), "{e:#}");
    let e = NameMap::parse("[pairs]\n\"p\" = \"q\"\n[[pair]]\na = \"p\"\nb = \"r\"\n").unwrap_err();
    assert!(
        format!("{e:#}").contains("pairs \"p\" of A a second time"),
        "{e:#}"
    );
}

#[test]
fn written_maps_parse_back_to_the_same_pairs() {
    let seed = NameMap::parse(
        "[pairs]\n\"cls\" = \"out/cls\"\n[[rewrite]]\nside = \"b\"\npattern = '^l(\\d+)$'\nreplace = 'blocks.$1'\n",
    )
    .unwrap();
    let pairs = vec![WrittenPair {
        a: "blocks.0.attn.v".into(),
        b: "odd \"name\"\\/x".into(),
        layout: Some("reshape(201,6,64)|permute(1,0,2)".parse().unwrap()),
        comment: "score 1".into(),
    }];
    let text = write(&["made by a test".into()], &seed, &pairs);
    let back = NameMap::parse(&text).unwrap();
    assert_eq!(back.pairs[0], seed.pairs[0]);
    assert_eq!(back.pairs[1].b, pairs[0].b);
    assert_eq!(back.pairs[1].layout, pairs[0].layout);
    assert_eq!(back.rewrites.len(), 1);
    assert_eq!(back.key("l3", Side::B).unwrap(), "blocks.3");
}
