//! `input_key`: a dotted path into a dependency's JSON output becomes the agent's input.

use pretty_assertions::assert_eq;
use serde_json::json;

use super::{error_of, output_json, run_json};
use crate::support::agent;

const NESTED: &str = r#"
name: nested
agents:
  - name: source
    type: script
    run:
      - python3
      - -c
      - |
        import json
        print(json.dumps({
            "meta": {"count": 2},
            "report": {"sections": [{"title": "intro"}, {"title": "deep value", "tags": ["x", "y"]}]},
        }))
  - name: title
    type: script
    depends_on: [source]
    input_key: report.sections.1.title
    run: [python3, -c, "import json, sys; d = json.load(sys.stdin); print(json.dumps({'input': d['input'], 'input_data': d['input_data']}))"]
  - name: section
    type: script
    depends_on: [source]
    input_key: report.sections.1
    run: [python3, -c, "import json, sys; print(json.dumps(json.load(sys.stdin)['input']))"]
  - name: llm
    model_profile: mock-fast
    depends_on: [source]
    input_key: report.sections.1.title
  - name: tags
    type: script
    depends_on: [source]
    input_key: report.sections.1.tags
    fan_out: true
    run: [sh, -c, 'printf "tag-%s" "$INPUT_TEXT"']
"#;

#[test]
fn input_key_selects_a_nested_value() {
    let (doc, _) = run_json(NESTED, "the run input", 0);
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(
        output_json(agent(&doc, "title")),
        json!({"input": "deep value", "input_data": "deep value"})
    );
    // An object slice arrives whole.
    assert_eq!(
        output_json(agent(&doc, "section")),
        json!({"title": "deep value", "tags": ["x", "y"]})
    );
    // An LLM agent without a template works on the slice alone, not the run input.
    let llm = agent(&doc, "llm")["output"].as_str().unwrap();
    assert!(llm.contains("deep value"), "{llm}");
    assert!(!llm.contains("the run input"), "{llm}");
    // And a nested array can be fanned out over.
    assert_eq!(output_json(agent(&doc, "tags")), json!(["tag-x", "tag-y"]));
}

#[test]
fn a_missing_input_key_fails_the_agent() {
    let yaml = NESTED.replace(
        "input_key: report.sections.1.title\n    run",
        "input_key: report.sections.5.title\n    run",
    );
    let (doc, _) = run_json(&yaml, "go", 1);
    let title = agent(&doc, "title");
    assert_eq!(title["status"], "failed");
    assert!(
        error_of(title).contains("report.sections.5.title"),
        "{title:#}"
    );
    assert_eq!(agent(&doc, "section")["status"], "succeeded");
}
