/**
 * History ⇄ JSON in the form `temporal workflow show --output json` writes, for replay fixtures.
 *
 * Why not `historyToJSON`/`historyFromJSON` from @temporalio/common: protojson checks `type instanceof Type`,
 * and npm installs protobufjs 8 twice here (under @temporalio/common and under @temporalio/proto, since the
 * root holds protobufjs 7 for another package), so the History type that @temporalio/proto builds is never
 * an instance of the copy @temporalio/common imports and both functions throw "type must be a Type". Using
 * the protojson of the copy @temporalio/proto itself resolves keeps type and converter from one package.
 */
import { createRequire } from 'node:module';
import type * as protoTypes from '@temporalio/proto';
import { patchProtobufRoot } from '@temporalio/proto/lib/patch-protobuf-root.js';

export type History = protoTypes.temporal.api.history.v1.IHistory;

interface ProtoJson {
  toJson(type: unknown, message: unknown): unknown;
  fromJson(type: unknown, json: unknown, options?: { ignoreUnknownFields?: boolean }): unknown;
}

const require = createRequire(import.meta.url);
// Loaded as CommonJS: patchProtobufRoot walks the root's prototype chain, which an ESM namespace lacks.
const proto = require('@temporalio/proto') as typeof protoTypes;
const protoRequire = createRequire(require.resolve('@temporalio/proto'));
const protojson = protoRequire('protobufjs/ext/protojson') as ProtoJson;
const historyType = (patchProtobufRoot(proto) as unknown as { lookupType(name: string): unknown }).lookupType(
  'temporal.api.history.v1.History',
);

export function historyToJson(history: History): string {
  const message = proto.temporal.api.history.v1.History.fromObject(history);
  return JSON.stringify(protojson.toJson(historyType, message), null, 2);
}

/** Fields a newer server or SDK added are ignored, as the SDK's own reader does. */
export function historyFromJson(json: unknown): History {
  if (typeof json !== 'object' || json === null || !Array.isArray((json as History).events))
    throw new TypeError('a history must be an object with an array of events');
  return protojson.fromJson(historyType, json, { ignoreUnknownFields: true }) as History;
}
