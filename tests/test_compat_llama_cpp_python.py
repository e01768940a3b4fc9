"""Snippets written for llama-cpp-python (its README and docs), run unchanged but for the
import line. Each checks the shape that code written for llama-cpp-python relies on."""

from __future__ import annotations

import json

import pytest

from llama_ffi import Llama, LlamaGrammar  # was: from llama_cpp import Llama, LlamaGrammar


@pytest.fixture(scope="module")
def model_file(model_path):
    return str(model_path)


def test_readme_high_level_completion(model_file):
    llm = Llama(
        model_path=model_file,
        # n_gpu_layers=-1, # Uncomment to use GPU acceleration
        seed=1337,  # Uncomment to set a specific seed
        # n_ctx=2048, # Uncomment to increase the context window
        verbose=False,
    )
    output = llm(
        "Q: Name the planets in the solar system? A: ",  # Prompt
        max_tokens=32,  # Generate up to 32 tokens, set to None to generate up to the end of the context window
        stop=["Q:", "\n"],  # Stop generating just before the model would generate a new question
        echo=True,  # Echo the prompt back in the output
    )  # Generate a completion, can also call create_completion
    assert output["object"] == "text_completion"
    text = output["choices"][0]["text"]
    assert text.startswith("Q: Name the planets in the solar system? A: ")
    assert "Q:" not in text[len("Q: Name the planets"):] and "\n" not in text
    assert output["usage"]["completion_tokens"] <= 32
    llm.close()


def test_readme_streaming(model_file):
    llm = Llama(model_path=model_file, verbose=False)
    pieces = []
    for chunk in llm("Q: What is the capital of France? A:", max_tokens=16, stream=True):
        pieces.append(chunk["choices"][0]["text"])
    assert "".join(pieces)
    llm.close()


def test_readme_chat_completion(model_file):
    llm = Llama(model_path=model_file, chat_format="chatml", verbose=False)
    response = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "You are an assistant who perfectly describes images."},
            {"role": "user", "content": "Describe this image in detail please."},
        ],
        max_tokens=16,
    )
    assert response["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(response["choices"][0]["message"]["content"], str)
    llm.close()


def test_readme_chat_streaming(model_file):
    llm = Llama(model_path=model_file, verbose=False)
    text = ""
    for chunk in llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], stream=True, max_tokens=8):
        delta = chunk["choices"][0]["delta"]
        if "content" in delta:
            text += delta["content"]
    assert text
    llm.close()


def test_readme_json_mode(model_file):
    llm = Llama(model_path=model_file, chat_format="chatml", verbose=False)
    out = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "You are a helpful assistant that outputs in JSON."},
            {"role": "user", "content": "Who won the world series in 2020"},
        ],
        response_format={"type": "json_object"},
        temperature=0.7,
        max_tokens=48,
    )
    content = out["choices"][0]["message"]["content"]
    assert content.lstrip().startswith("{")
    if out["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)
    llm.close()


def test_readme_json_schema_mode(model_file):
    llm = Llama(model_path=model_file, chat_format="chatml", verbose=False)
    out = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "You are a helpful assistant that outputs in JSON."},
            {"role": "user", "content": "Who won the world series in 2020"},
        ],
        response_format={
            "type": "json_object",
            "schema": {
                "type": "object",
                "properties": {"team_name": {"type": "string"}},
                "required": ["team_name"],
            },
        },
        temperature=0.7,
        # Beyond the README: a seed and a token bound keep CI deterministic and fast (a
        # 135M model can ramble inside a string at 0.7 and run out of tokens otherwise).
        seed=1234,
        max_tokens=200,
    )
    assert out["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(out["choices"][0]["message"]["content"])["team_name"], str)
    llm.close()


def test_readme_function_calling(model_file):
    llm = Llama(model_path=model_file, chat_format="chatml-function-calling", verbose=False)
    out = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "A chat between a curious user and an artificial intelligence assistant. "
                                          "The assistant gives helpful, detailed, and polite answers to the user's "
                                          "questions. The assistant calls functions with appropriate input when "
                                          "necessary"},
            {"role": "user", "content": "Extract Jason is 25 years old"},
        ],
        tools=[{
            "type": "function",
            "function": {
                "name": "UserDetail",
                "parameters": {
                    "type": "object",
                    "title": "UserDetail",
                    "properties": {
                        "name": {"title": "Name", "type": "string"},
                        "age": {"title": "Age", "type": "integer"},
                    },
                    "required": ["name", "age"],
                },
            },
        }],
        tool_choice={"type": "function", "function": {"name": "UserDetail"}},
        max_tokens=60,
    )
    call = out["choices"][0]["message"]["tool_calls"][0]
    args = json.loads(call["function"]["arguments"])
    assert call["function"]["name"] == "UserDetail" and isinstance(args["age"], int)
    llm.close()


def test_readme_embeddings(model_file):
    llm = Llama(model_path=model_file, embedding=True, verbose=False)
    embeddings = llm.create_embedding("Hello, world!")
    assert len(embeddings["data"]) == 1
    embeddings = llm.create_embedding(["Hello, world!", "Goodbye, world!"])
    assert [d["index"] for d in embeddings["data"]] == [0, 1]
    llm.close()


def test_grammar(model_file):
    grammar = LlamaGrammar.from_string(r'''
root ::= answer
answer ::= "The answer is " [0-9]+ "."
''')
    llm = Llama(model_path=model_file, verbose=False)
    output = llm("Q: What is 2 + 2? A:", grammar=grammar, max_tokens=12)
    text = output["choices"][0]["text"]
    assert text.startswith("The answer is ")
    llm.close()


def test_json_schema_grammar(model_file):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    grammar = LlamaGrammar.from_json_schema(json.dumps(schema))
    llm = Llama(model_path=model_file, verbose=False)
    output = llm("A city as JSON:", grammar=grammar, max_tokens=40, temperature=0)
    assert isinstance(json.loads(output["choices"][0]["text"])["city"], str)
    llm.close()


def test_tokenize_state_and_sizes(model_file):
    llm = Llama(model_path=model_file, n_ctx=256, verbose=False)
    tokens = llm.tokenize(b"Hello, world!")
    assert llm.detokenize(tokens) == b"Hello, world!"
    assert llm.n_ctx() == 256 and llm.n_vocab() > 0 and llm.n_embd() > 0
    assert llm.token_eos() >= 0 and isinstance(llm.metadata, dict)
    llm("Hello", max_tokens=2, temperature=0)
    state = llm.save_state()
    after = llm("Hello", max_tokens=6, temperature=0)["choices"][0]["text"]
    llm.reset()
    llm.load_state(state)
    assert state.n_tokens == len(state.input_ids) > 0
    assert llm("Hello", max_tokens=6, temperature=0)["choices"][0]["text"] == after
    llm.close()
    llm.close()  # idempotent


def test_context_manager(model_file):
    with Llama(model_path=model_file, n_ctx=128, verbose=False) as llm:
        assert llm.create_completion("Hi", max_tokens=1)["choices"][0]["finish_reason"] in ("length", "stop")
