import * as ortNode from 'onnxruntime-node';
import { loadModel, type LoadedModel, type OrtRuntime, type Precision } from '../../shared/model';
import { folderFiles } from '../../shared/model/node-files';
import { loadTokenizer, type TextTokenizer } from '../../shared/tokenizer';

/** The model pair under test: the shipped one, or your own via EDGESPEC_TARGET_DIR / EDGESPEC_DRAFT_DIR. */
export const TARGET_DIR = process.env.EDGESPEC_TARGET_DIR ?? 'models/edgespec-target';
export const DRAFT_DIR = process.env.EDGESPEC_DRAFT_DIR ?? 'models/edgespec-draft';

export const nodeOrt = ortNode as unknown as OrtRuntime;

export function loadNodeModel(dir: string, precision: Precision = 'full'): Promise<LoadedModel> {
  return loadModel(nodeOrt, folderFiles(dir), precision, { intraOpNumThreads: 1 });
}

export function loadFolderTokenizer(dir: string): Promise<TextTokenizer> {
  return loadTokenizer(folderFiles(dir));
}
