// Drives the gateway through the Vercel AI SDK, the package OpenWork loads for a custom provider.
// The provider is built only from the published provider JSON: `api` as baseURL, the key from the
// variable named in env[0]. Prints one JSON object per case; exits 1 on the first error.
//   node run.mjs provider.json      (AISDK_MODEL picks the model; default: the first one listed)
import { readFileSync } from "node:fs";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const published = JSON.parse(readFileSync(process.argv[2], "utf8"));
const provider = createOpenAICompatible({
  name: published.id,
  baseURL: published.api,
  apiKey: process.env[published.env[0]],
  includeUsage: true,
});
const model = provider(process.env.AISDK_MODEL ?? published.models[0].id);

async function run(name, body) {
  try {
    console.log(JSON.stringify({ case: name, ...(await body()) }));
  } catch (error) {
    console.log(JSON.stringify({ case: name, error: String(error?.message ?? error) }));
    process.exit(1);
  }
}

await run("generate", async () => {
  const result = await generateText({ model, prompt: "hello from the ai sdk" });
  return { text: result.text, usage: result.usage, finishReason: result.finishReason };
});

await run("stream", async () => {
  const result = streamText({ model, prompt: "stream these words please" });
  let text = "";
  let chunks = 0;
  for await (const delta of result.textStream) {
    text += delta;
    chunks += 1;
  }
  return { text, chunks, usage: await result.usage };
});

await run("tool", async () => {
  const getWeather = tool({
    description: "The weather in a city",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => `21C and sunny in ${city}`,
  });
  const result = await generateText({
    model,
    prompt: "Lisbon",
    tools: { get_weather: getWeather },
    stopWhen: stepCountIs(3),
  });
  return {
    toolCalls: result.steps.flatMap((s) => s.toolCalls).map((c) => ({ toolName: c.toolName, input: c.input })),
    toolResults: result.steps.flatMap((s) => s.toolResults).map((r) => ({ toolName: r.toolName, output: r.output })),
    text: result.text,
    steps: result.steps.length,
  };
});

await run("stream_tool", async () => {
  const getWeather = tool({
    description: "The weather in a city",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => `21C and sunny in ${city}`,
  });
  const result = streamText({
    model,
    prompt: "Lisbon",
    tools: { get_weather: getWeather },
    stopWhen: stepCountIs(3),
  });
  let text = "";
  for await (const delta of result.textStream) text += delta;
  const steps = await result.steps;
  return {
    toolCalls: steps.flatMap((s) => s.toolCalls).map((c) => ({ toolName: c.toolName, input: c.input })),
    text,
    usage: await result.totalUsage,
    steps: steps.length,
  };
});
