//! TEMPORARY (train helper): what a model directory says about a few prompts.
use candle_core::Device;
use triage::classifier::{Classifier, ClassifierInput};

fn main() {
    let dir = std::env::args().nth(1).expect("model dir");
    let c = Classifier::load_dir(std::path::Path::new(&dir), &Device::Cpu).unwrap();
    let skills = c.skills().to_vec();
    let prompts = [
        "Write a Python function that returns the n-th Fibonacci number.",
        "Fix the bug in this Rust code: fn main() { let x: i32 = \"5\"; }",
        "Solve for x: 3x + 5 = 20.",
        "Prove that there are infinitely many primes.",
        "What is the capital of Australia?",
        "Who wrote the novel War and Peace?",
        "Write a short poem about autumn leaves.",
        "Draft a polite email declining a meeting invitation.",
        "hi! how are you today?",
        "What's the weather in Paris right now?",
        "Book me a flight from Boston to Denver next Friday.",
        "Extract all the dates from this text: The meeting moved from March 3 to April 10, 2024.",
        "If all bloops are razzies and all razzies are lazzies, are all bloops lazzies?",
        "Explain the difference between TCP and UDP.",
    ];
    let models = ["gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1", "llama-3.1-8b-instruct", "mistralai/mistral-7b-chat"];
    for p in prompts {
        let pred = c.predict_one(&ClassifierInput::from_text(p)).unwrap();
        let mix = pred.skill_mix(&skills);
        let mut top: Vec<(usize, f32)> = pred.skills.iter().copied().enumerate().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let qs: Vec<String> = models
            .iter()
            .filter_map(|m| c.metadata.abilities.get(*m).map(|t| format!("{:.2}", triage::train::quality(t, &mix, pred.difficulty))))
            .collect();
        println!(
            "b={:+.2} tool={:.2} {}:{:.2} {}:{:.2} q[{}] | {}",
            pred.difficulty, pred.tool_need, skills[top[0].0], top[0].1, skills[top[1].0], top[1].1, qs.join(" "), p
        );
    }
}
