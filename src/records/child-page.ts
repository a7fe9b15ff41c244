/**
 * A parent's child-file page in one gateway transaction: the file, its ranks
 * and its offers were three (three lockdown checks, three loads of the same
 * child, three commits) for one page. Each part still decides, writes its own
 * audit event before anything leaves and is weighed by detection, exactly as
 * readChildFile, readChildRanks and listParentOffers do on their own; a
 * refusal of any part refuses the page, as it did.
 */
import type { Ctx, Deps } from '../context.ts';
import { childFileIn, run, type ChildFileView } from './gateway.ts';
import { parentOffersIn, type ParentOfferView } from './offers.ts';
import { childRanksIn, type ChildRank } from './ranks.ts';
import type { ConfirmationState } from './confirmation.ts';

export interface ChildPage {
  child: ChildFileView;
  ranks: ChildRank[];
  confirmation: ConfirmationState;
  offers: ParentOfferView[];
}

export async function readChildPage(deps: Deps, ctx: Ctx, childId: string): Promise<ChildPage> {
  return run(deps, ctx, 'waitlist.childFile.read', async (trx, env) => {
    const { view, row } = await childFileIn(trx, env, ctx, childId, 'parent.childFile.view');
    const { ranks, confirmation } = await childRanksIn(trx, env, ctx, view.id, row);
    const offers = await parentOffersIn(trx, ctx, view.id);
    return { child: view, ranks, confirmation, offers };
  });
}
