query = "What is flash attention?"
documents = [
    "Flash attention is a memory-efficient attention algorithm.",
    "CUDA is a parallel computing platform by NVIDIA.",
    "Attention mechanisms are core to transformer models.",
    "Python is a popular programming language.",
]

results = client.rerank(query=query, documents=documents)
for result in results:
    print(f"Score: {result['score']:.4f} -- {documents[result['index']][:60]}")
