/**
 * The descriptors this server answers reflection with: FileDescriptorSets written by `buf build`
 * at build time (gen/*.binpb), with every import (spiff/connector/v1/options.proto,
 * google/protobuf/descriptor.proto...).
 *
 * Each file is served as the exact bytes buf wrote. Re-encoding would risk the custom options
 * (spiff.connector.v1.connector, command and field) that the proxy reads to build its
 * catalogue: they are extensions, which a decoder that does not know them may drop. (This is why
 * @grpc/reflection is not used: it decodes and re-encodes files with protobufjs, and merges the
 * files of one package.)
 */

import { readFileSync } from "node:fs";

import { create, createFileRegistry, fromBinary, type DescFile, type FileRegistry } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";

/** Files by name and the indexes reflection needs. */
export class DescriptorFiles {
  /** by file name, e.g. spiff/connector/v1/options.proto */
  private readonly bytesByName = new Map<string, Uint8Array>();
  private readonly fileByName = new Map<string, DescFile>();
  private readonly fileBySymbol = new Map<string, DescFile>();
  /** extendee full name → extension number → the file declaring the extension */
  private readonly extensionsByExtendee = new Map<string, Map<number, DescFile>>();
  private readonly registry: FileRegistry;

  constructor(sets: readonly Uint8Array[]) {
    const protos: FileDescriptorProto[] = [];
    for (const set of sets) {
      for (const bytes of splitFileDescriptorSet(set)) {
        const proto = fromBinary(FileDescriptorProtoSchema, bytes);
        if (this.bytesByName.has(proto.name)) continue; // an import shared by two sets
        this.bytesByName.set(proto.name, bytes);
        protos.push(proto);
      }
    }
    this.registry = createFileRegistry(create(FileDescriptorSetSchema, { file: protos }));
    this.index();
  }

  /** Reads the descriptor set files written by the build. */
  static load(paths: readonly string[]): DescriptorFiles {
    return new DescriptorFiles(paths.map((path) => new Uint8Array(readFileSync(path))));
  }

  /** Whether a service of this full name is described. */
  hasService(name: string): boolean {
    return this.registry.getService(name) !== undefined;
  }

  /** The file of this name and every file it imports, transitively: the file first, then its
   * imports depth-first (the order of grpcio-reflection's server), as serialized bytes. */
  fileWithDependencies(fileName: string): Uint8Array[] | undefined {
    const file = this.fileByName.get(fileName);
    return file === undefined ? undefined : this.withDependencies(file);
  }

  /** The file declaring a symbol (a message, field, enum, enum value, service, method or
   * extension), with its dependencies. */
  fileContainingSymbol(symbol: string): Uint8Array[] | undefined {
    const file = this.fileBySymbol.get(symbol);
    return file === undefined ? undefined : this.withDependencies(file);
  }

  /** The file declaring extension `number` of message `extendee`, with its dependencies. */
  fileContainingExtension(extendee: string, number: number): Uint8Array[] | undefined {
    const file = this.extensionsByExtendee.get(extendee)?.get(number);
    return file === undefined ? undefined : this.withDependencies(file);
  }

  /** The extension numbers of a message, sorted; undefined for an unknown message. */
  extensionNumbers(extendee: string): number[] | undefined {
    if (this.registry.getMessage(extendee) === undefined) return undefined;
    return [...(this.extensionsByExtendee.get(extendee)?.keys() ?? [])].sort((a, b) => a - b);
  }

  private withDependencies(file: DescFile): Uint8Array[] {
    const seen = new Map<string, Uint8Array>();
    const visit = (current: DescFile): void => {
      const name = current.proto.name; // DescFile.name lacks the .proto suffix
      const bytes = this.bytesByName.get(name);
      if (seen.has(name) || bytes === undefined) return;
      seen.set(name, bytes);
      current.dependencies.forEach(visit);
    };
    visit(file);
    return [...seen.values()];
  }

  private index(): void {
    for (const file of this.registry.files) this.fileByName.set(file.proto.name, file);
    for (const type of this.registry) {
      this.fileBySymbol.set(type.typeName, type.file);
      switch (type.kind) {
        case "service":
          for (const method of type.methods) this.fileBySymbol.set(`${type.typeName}.${method.name}`, type.file);
          break;
        case "message":
          for (const field of type.fields) this.fileBySymbol.set(`${type.typeName}.${field.name}`, type.file);
          for (const oneof of type.oneofs) this.fileBySymbol.set(`${type.typeName}.${oneof.name}`, type.file);
          break;
        case "enum": {
          // Enum values are scoped as siblings of their enum, as in protoc's symbol table.
          const scope = type.typeName.slice(0, Math.max(0, type.typeName.lastIndexOf(".")));
          for (const value of type.values) this.fileBySymbol.set(scope ? `${scope}.${value.name}` : value.name, type.file);
          break;
        }
        case "extension": {
          const numbers = this.extensionsByExtendee.get(type.extendee.typeName) ?? new Map<number, DescFile>();
          numbers.set(type.number, type.file);
          this.extensionsByExtendee.set(type.extendee.typeName, numbers);
          break;
        }
      }
    }
  }
}

/** The serialized FileDescriptorProtos of a FileDescriptorSet (`repeated FileDescriptorProto
 * file = 1`), each as the bytes it was written with. */
function splitFileDescriptorSet(set: Uint8Array): Uint8Array[] {
  const files: Uint8Array[] = [];
  const reader = new BinaryReader(set);
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1 && wireType === WireType.LengthDelimited) {
      files.push(reader.bytes());
    } else {
      reader.skip(wireType);
    }
  }
  return files;
}
